"""``python -m fastervit``: see :mod:`fastervit.cli`."""

import sys

from fastervit.cli import main

sys.exit(main())
