"""Silence the Lightning messages that say nothing to a restoration user, one message at a time.

Each filter names one message exactly (never a whole logger or warning category), and each is
there because the message is irrelevant or reads as an error although the behaviour is by
design here:

* "GPU/TPU/HPU available: ..." and the cloud-logging / model-upload tips: device banners and
  advertisements printed before every run;
* "Seed set to 0": every image is seeded from ``(data.seed, index)`` anyway;
* "The `srun` command is available on your system but is not used": printed on any machine
  with SLURM installed, also for runs that should not use it;
* "SLURM auto-requeueing enabled": lightning-redd replaces that handler with its own
  (:mod:`lightning_redd.lit.requeue`), so the message would be wrong;
* "`configure_optimizers` returned `None`, this fit will run with no optimizer" and "Found N
  module(s) in eval mode at the start of training": by design, the solver owns Adam on ``mu``
  and the prior is frozen in eval mode;
* "`Trainer.fit` stopped: `max_epochs=1` reached": a fit is one pass by design;
* the ``isinstance(treespec, LeafSpec)`` deprecation warning from Lightning's own code.

The CLI installs them (:func:`install`); code that uses the module from Python keeps every message.
"""
from __future__ import annotations

import logging
import warnings

LOG_MESSAGES = {
    "lightning.pytorch.utilities.rank_zero": ("GPU available: ", "TPU available: ", "HPU available: ",
                                              "💡 Tip: For seamless cloud", "`Trainer.fit` stopped: `max_epochs=1` reached"),
    "lightning.fabric.utilities.seed": ("Seed set to ",),
    "lightning.pytorch.trainer.connectors.signal_connector": ("SLURM auto-requeueing enabled. Setting signal handlers.",),
}
WARNING_MESSAGES = (
    r"The `srun` command is available on your system but is not used",
    r"`LightningModule.configure_optimizers` returned `None`, this fit will run with no optimizer",
    r"Found \d+ module\(s\) in eval mode at the start of training",
    r"`isinstance\(treespec, LeafSpec\)` is deprecated",
)


class DropMessages(logging.Filter):
    """Drops log records whose message contains one of ``phrases``."""

    def __init__(self, phrases: tuple[str, ...]) -> None:
        super().__init__()
        self.phrases = phrases

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(p in message for p in self.phrases)


_installed = False


def install() -> None:
    """Add the filters (once per process)."""
    global _installed
    if _installed:
        return
    for name, phrases in LOG_MESSAGES.items():
        logging.getLogger(name).addFilter(DropMessages(phrases))
    for pattern in WARNING_MESSAGES:
        warnings.filterwarnings("ignore", message=pattern)
    _installed = True
