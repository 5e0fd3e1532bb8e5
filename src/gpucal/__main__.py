"""``python -m gpucal``: the same as the ``gpucal`` command.

A Ctrl-C while Python is still importing ``gpucal.cli`` ends as ``main`` ends one: one line, exit 130.
"""

import sys

try:
    from gpucal.cli import main

    code = main()
except KeyboardInterrupt:
    sys.stderr.write("gpucal: interrupted\n")
    code = 130
sys.exit(code)
