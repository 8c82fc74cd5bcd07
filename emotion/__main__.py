"""`python -m emotion predict|video|batch ...`: see emotion.cli."""

from emotion.cli import main

# Guarded: the batch command's worker processes import this module again when they start.
if __name__ == "__main__":
    raise SystemExit(main())
