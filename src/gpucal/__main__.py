"""``python -m gpucal``: the same as the ``gpucal`` command."""

import sys

from gpucal.cli import main

sys.exit(main())
