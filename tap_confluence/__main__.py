"""Run the tap with ``python -m tap_confluence``."""

from tap_confluence.tap import TapConfluence

TapConfluence.cli()
