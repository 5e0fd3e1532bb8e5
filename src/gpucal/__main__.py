"""``python -m gpucal`` and the ``gpucal`` console script (``main``): the same command.

Importing this module is light (``sys`` and ``importlib``); ``main`` imports ``gpucal.cli`` inside its own
handler, so that a Ctrl-C while Python is still importing it ends as ``gpucal.cli.main`` ends one: one
line, exit 130.

``datetime`` comes first: pydantic_core imports its C API as it loads, through a call that cannot pass a
``KeyboardInterrupt`` on (a Ctrl-C inside that import ends the process in a Rust panic and a traceback). With
``datetime`` already loaded that call runs no Python code, so a signal cannot land inside it; one that lands
while ``datetime`` itself is imported here is an ordinary ``KeyboardInterrupt``.
"""

import importlib
import sys

__all__ = ["main"]


def main() -> int:
    """Run ``gpucal`` with the process's arguments; return the exit code."""
    try:
        importlib.import_module("datetime")
        return importlib.import_module("gpucal.cli").main()
    except KeyboardInterrupt:
        sys.stderr.write("gpucal: interrupted\n")
        return 130


if __name__ == "__main__":
    sys.exit(main())
