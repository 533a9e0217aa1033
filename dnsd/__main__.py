"""`python -m dnsd` entry point."""

from dnsd.cli import main

raise SystemExit(main())
