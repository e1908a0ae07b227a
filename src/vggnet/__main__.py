"""`python -m vggnet` is the `vggnet` command."""

from .cli import main

raise SystemExit(main())
