"""``python -m decodekit``: the same as the ``decodekit`` command."""

from decodekit.cli import main

raise SystemExit(main())
