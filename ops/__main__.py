"""``python -m ops <command> ...`` from the repository's root.

The library lives in the Lambda layer's folder, not in site-packages: put it on the path here
so operators need no ``PYTHONPATH``.
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "layers" / "kisi_gateway"))

from ops.cli import main  # after the layer is on the path

if __name__ == "__main__":
    sys.exit(main())
