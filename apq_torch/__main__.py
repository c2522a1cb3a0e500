"""python -m apq_torch: the command line (apq_torch/tools/cli.py)."""

import sys

from .tools.cli import main

sys.exit(main())
