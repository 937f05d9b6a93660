"""``python -m kisi_sim [--host H] [--port P] [--verbose]``: the simulator in the foreground."""

import sys

from kisi_sim.cli import main

if __name__ == "__main__":
    sys.exit(main())
