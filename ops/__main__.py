"""``python -m ops <command> ...`` (with ``PYTHONPATH=layers/kisi_gateway``)."""

from __future__ import annotations

import sys

from ops.cli import main

if __name__ == "__main__":
    sys.exit(main())
