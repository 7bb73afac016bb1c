"""``python -m medmix_sklearn``: the ``medmix`` command."""

import sys

from .cli import main

if __name__ == "__main__":
    sys.exit(main())
