"""Shipping gate entry point: ``python gates/gate.py --run-id RUN_ID`` (or ``--output-dir DIR``).

The gate itself is the package ``processor.gate`` (thresholds, evidence, checks, registry, cli); this
script stays where CI, MLproject and the docs call it. ``--help`` lists the checks and exit codes."""

import sys

from processor.gate.cli import run

if __name__ == "__main__":
    sys.exit(run())
