"""``python -m distillscope`` runs the command line."""

import sys

from distillscope.cli import main

sys.exit(main())
