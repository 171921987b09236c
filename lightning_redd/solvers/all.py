"""Every built-in solver (importing this module registers their names in :data:`SOLVERS` and
makes their short class names known to the CLI).

:data:`SOLVERS` fills itself: a :class:`~lightning_redd.solvers.base.Solver` subclass that sets
``name`` appears in it when its module is imported; nothing here lists names.
"""
from lightning_redd.solvers.base import SOLVERS
from lightning_redd.solvers.classical import Classical
from lightning_redd.solvers.ddim import DDIM
from lightning_redd.solvers.ddrm import DDRM
from lightning_redd.solvers.dps import DPS
from lightning_redd.solvers.pigdm import PiGDM
from lightning_redd.solvers.red_diff import RedDiff

__all__ = ["SOLVERS", "Classical", "DDIM", "DDRM", "DPS", "PiGDM", "RedDiff"]
