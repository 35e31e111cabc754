"""``python -m rmtsched`` is the same program as the ``rmtsched`` console script."""

from rmtsched.cli.main import main

raise SystemExit(main())
