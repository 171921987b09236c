"""What a step hands to the callbacks: one typed result per restored batch.

``predict_step`` returns a :class:`Restored`; in ``fit`` the ``training_step`` of a batch's
last iterate returns ``{"restored": Restored}`` (the other steps return nothing). Lightning
passes that value to every callback's ``on_predict_batch_end`` / ``on_train_batch_end`` as
``outputs``, which is how the image writer receives it: no side channel on the module.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Restored:
    """One restored batch of ``B`` images (tensors detached).

    Attributes:
        names: the images' name stems (the files they came from).
        index: ``(B,)`` long, the images' positions in the run's sorted file list (host).
        x_hat: ``(B, C, H, W)`` float32, the restored images in ``[-1, 1]`` up to clipping.
        x_init: ``(B, C, H, W)`` float32, the solver's starting estimate.
        y: the measurements ``(B, ...)`` as the operator produced (or observes) them.
        diverged: ``(B,)`` bool, images whose estimate turned non-finite (nothing to save).
        nfe: denoiser evaluations per image.
        seconds: the solve's wall time per image (measuring ``y`` included).
        x: ``(B, C, H, W)`` ground truth, or None (measured data without it).
        consistency: measured data only: ``{"residual", "sigma_y_implied", "sigma_y"}``, each
            ``(B,)``: how well each restoration explains its measurement.
        frames: the estimate every ``evolution_every`` iterates (``x_init`` first), each
            ``(B, C, H, W)`` on the CPU; empty when not asked for.
        psnr_curve: ``(B, S)`` float64 on the CPU, each image's PSNR after each of the ``S``
            iterates (None without ground truth).
        solver: the solver's label (for plots and logs).
        keep: ``(B,)`` bool on the host, the members to write (None: all); a resumed batch is
            solved whole, its members finished by an earlier run are not written again.
        sample: ``(B,)`` long on the host, which posterior sample of its image each member is
            (None: sample 0 of every member).
        samples: the posterior samples per image of the run (``data.samples_per_image``); with
            more than one, the writer gathers an image's samples (:mod:`lightning_redd.lit.samples`).
    """

    names: tuple[str, ...]
    index: torch.Tensor
    x_hat: torch.Tensor
    x_init: torch.Tensor
    y: torch.Tensor
    diverged: torch.Tensor
    nfe: int
    seconds: float
    x: torch.Tensor | None = None
    consistency: dict[str, torch.Tensor] | None = None
    frames: tuple[torch.Tensor, ...] = ()
    psnr_curve: torch.Tensor | None = None
    solver: str = "solver"
    keep: torch.Tensor | None = None
    sample: torch.Tensor | None = None
    samples: int = 1

    def __len__(self) -> int:
        return len(self.names)

    def to_cpu(self) -> Restored:
        """The same result with every tensor on the CPU (float32 images, bool ``diverged``)."""
        def cpu(t):
            return None if t is None else t.detach().cpu()

        return Restored(
            names=self.names, index=cpu(self.index), x_hat=cpu(self.x_hat).float(), x_init=cpu(self.x_init).float(),
            y=cpu(self.y).float(), diverged=cpu(self.diverged).bool(), nfe=self.nfe, seconds=self.seconds,
            x=None if self.x is None else cpu(self.x).float(),
            consistency=None if self.consistency is None else {k: cpu(v).double() for k, v in self.consistency.items()},
            frames=self.frames, psnr_curve=cpu(self.psnr_curve), solver=self.solver, keep=cpu(self.keep),
            sample=cpu(self.sample), samples=self.samples,
        )
