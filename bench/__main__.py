"""`python -m bench` (and `torchrun -m bench`) is the `bench` command."""

import sys

from .cli import main

sys.exit(main())
