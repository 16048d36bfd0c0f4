"""``python -m openintent``: the ``openintent`` command."""

from openintent.cli import main

raise SystemExit(main())
