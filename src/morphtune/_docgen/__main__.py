"""``python -m morphtune._docgen [--check] [--root DIR]``."""

from morphtune._docgen import main

raise SystemExit(main())
