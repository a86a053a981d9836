"""``python -m auth``: serve the auth API, or ``create-admin`` (see :mod:`auth.cli`)."""

from auth.cli import main

raise SystemExit(main())
