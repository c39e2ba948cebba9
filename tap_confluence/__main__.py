"""Run the tap: ``python -m tap_confluence`` and the ``tap-confluence`` command."""

import atexit
import gc
import os
import sys
import threading


def main() -> None:
    """Import the tap with the collector paused, freeze what the import made, run the CLI.

    Importing the tap (the SDK above all) makes some 90,000 objects that live as long as the
    process. Left to the collector, its passes over them cost ~0.1 s of CPU per start (a
    fifth of a --discover), so they are frozen instead, as TapConfluence.invoke freezes the
    heap for the run.
    """
    gc.disable()
    try:
        from tap_confluence.tap import TapConfluence  # noqa: PLC0415
    finally:
        gc.freeze()
        gc.enable()
    try:
        TapConfluence.cli()
    except SystemExit as done:
        leave(done.code)
        raise


def leave(code: object) -> None:
    """End the process as the interpreter does at exit, less taking its heap apart object by object.

    After a 200,000-record backfill that teardown took 0.16 s (some 0.05 s after any run), for
    nothing: the memory goes with the process. The interpreter's own steps are kept, in its
    order: other threads finish (``threading``'s shutdown, which also stops idle thread
    pools), the exit handlers run (logging's flush, the helper processes' stop), stdout and
    stderr are flushed. Where a step is not there or a flush fails (a target that went away),
    the interpreter's ordinary exit takes over and reports it as it would.
    """
    shutdown = getattr(threading, "_shutdown", None)
    if not callable(shutdown) or not isinstance(code, int | None):
        return
    shutdown()
    atexit._run_exitfuncs()
    try:
        sys.stdout.flush()
        sys.stderr.flush()
    except (OSError, ValueError):
        return
    os._exit(code or 0)


if __name__ == "__main__":
    main()
