"""Every solver, by name (importing this module makes their short names known to the CLI)."""
from lightning_redd.solvers.classical import Classical
from lightning_redd.solvers.ddim import DDIM
from lightning_redd.solvers.ddrm import DDRM
from lightning_redd.solvers.dps import DPS
from lightning_redd.solvers.pigdm import PiGDM
from lightning_redd.solvers.red_diff import RedDiff

SOLVERS = {"red_diff": RedDiff, "ddim": DDIM, "dps": DPS, "pigdm": PiGDM, "ddrm": DDRM, "classical": Classical}

__all__ = ["SOLVERS", "Classical", "DDIM", "DDRM", "DPS", "PiGDM", "RedDiff"]
