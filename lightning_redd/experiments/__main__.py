"""``python -m lightning_redd.experiments table|iterates ...`` (see :mod:`lightning_redd.experiments.cli`)."""
import sys

from lightning_redd.experiments.cli import main

sys.exit(main())
