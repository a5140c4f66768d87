"""``python -m cellsynth`` (and ``torchrun -m cellsynth``) runs the command line."""

import sys

from .cli import main

sys.exit(main())
