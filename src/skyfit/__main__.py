"""``python -m skyfit ...``: see :mod:`skyfit.cli`."""

import sys

from .cli import main

sys.exit(main())
