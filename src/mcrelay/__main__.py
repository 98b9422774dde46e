"""`python -m mcrelay` runs the `mcrelay` command."""

from mcrelay.cli.entry import main

raise SystemExit(main())
