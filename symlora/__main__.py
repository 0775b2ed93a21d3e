"""``python -m symlora`` (and ``torchrun -m symlora``) run the command line."""

import sys

from .lab.cli import main

sys.exit(main())
