"""``python -m autograder``: the instructor command line (see autograder.cli)."""
from .cli import main

raise SystemExit(main())
