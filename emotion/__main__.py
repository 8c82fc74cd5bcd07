"""`python -m emotion predict|video ...`: see emotion.cli."""

from emotion.cli import main

raise SystemExit(main())
