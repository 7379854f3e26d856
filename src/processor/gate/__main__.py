"""``python -m processor.gate``: the same as ``python gates/gate.py``."""

import sys

from processor.gate.cli import run

sys.exit(run())
