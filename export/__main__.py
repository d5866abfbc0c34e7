"""``python -m streamrec.export``: the same as ``streamrec export``."""

from __future__ import annotations

import sys

from streamrec.commands.export import main

if __name__ == "__main__":
    sys.exit(main())
