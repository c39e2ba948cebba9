"""Run the tap with ``python -m tap_confluence``."""

import gc

# Importing the tap (the SDK above all) makes some 90,000 objects that live as long as the
# process. Left to the collector, its passes over them cost ~0.1 s of CPU per start (a
# fifth of a --discover), so they are frozen instead, as TapConfluence.invoke freezes the
# heap for the run.
gc.disable()
try:
    from tap_confluence.tap import TapConfluence
finally:
    gc.freeze()
    gc.enable()

TapConfluence.cli()
