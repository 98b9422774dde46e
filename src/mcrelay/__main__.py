"""`python -m mcrelay` runs the `mcrelay` command."""

from mcrelay.cli.main import main

raise SystemExit(main())
