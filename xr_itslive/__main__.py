"""``python -m xr_itslive``: the ``xr-itslive`` command line."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
