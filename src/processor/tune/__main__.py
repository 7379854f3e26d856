"""``python -m processor.tune``."""

import sys

from processor.tune.cli import main

sys.exit(main())
