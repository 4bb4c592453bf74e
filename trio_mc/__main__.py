"""``python -m trio_mc`` is the same as the ``trio-mc`` console script."""

from trio_mc.cli import main

raise SystemExit(main())
