"""`python -m nnfast ...`: the command line of nnfast.cli."""
import sys

from .cli import main

sys.exit(main())
