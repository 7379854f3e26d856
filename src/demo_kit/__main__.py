"""``python -m demo_kit``: what `make demo` runs (:mod:`demo_kit.demo`)."""

import sys

from demo_kit.demo import main

if __name__ == "__main__":
    sys.exit(main())
