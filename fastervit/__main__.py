"""``python -m fastervit``: see :mod:`fastervit.commands.cli`."""

import sys

from fastervit.commands.cli import main

sys.exit(main())
