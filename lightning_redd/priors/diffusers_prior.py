"""A local diffusers ``UNet2DModel`` folder as a :class:`DiffusionPrior`.

Needs the optional extra: ``pip install "lightning_redd[diffusers]"``. Nothing is downloaded:
the folder is read with ``local_files_only=True``.

Expected layout (what ``save_pretrained`` / a DDPM pipeline folder gives)::

    folder/config.json + diffusion_pytorch_model.safetensors      (or folder/unet/...)
    folder/scheduler_config.json                                  (or folder/scheduler/...)

The discrete schedule is taken from the scheduler's own ``betas`` (``abar_t =
prod_{s<=t}(1 - beta_s)``, in float64). diffusers' UNets take the same integer training
timestep ``t in [0, T-1]`` as our priors, so times are passed unchanged. Outputs are turned
into ``eps``: ``epsilon`` as is (first ``C`` channels when the model also predicts a
variance), ``v_prediction`` via ``eps = sqrt(abar) v + sqrt(1 - abar) x_t``, ``sample``
(``x0``) via ``eps = (x_t - sqrt(abar) x0) / sqrt(1 - abar)``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from lightning_redd.priors.base import DiffusionPrior

INSTALL_HINT = 'DiffusersPrior needs the optional dependency diffusers: pip install "lightning_redd[diffusers]"'
PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")


def _import_diffusers() -> Any:
    try:
        import diffusers
    except ImportError as err:
        raise ImportError(INSTALL_HINT) from err
    return diffusers


def find_scheduler_config(folder: Path, subfolder: str | None) -> Path:
    """``scheduler_config.json`` next to the model, in a ``scheduler`` folder, or in the pipeline root."""
    roots = [folder / subfolder, folder] if subfolder else [folder]
    candidates = [r / name for r in roots for name in ("scheduler_config.json", "scheduler/scheduler_config.json")]
    for c in candidates:
        if c.is_file():
            return c
    raise FileNotFoundError(
        f"no scheduler config for the diffusers model in {str(folder)!r}; looked at "
        f"{[str(c) for c in candidates]}. Save the pipeline's scheduler there "
        "(scheduler.save_pretrained(folder)) so the noise schedule is known"
    )


def scheduler_betas(config: dict[str, Any]) -> torch.Tensor:
    """The ``(T,)`` float64 betas of a diffusers scheduler config, via the scheduler class itself.

    Raises:
        ValueError: a scheduler or schedule type without discrete VP betas.
    """
    diffusers = _import_diffusers()
    name = config.get("_class_name", "DDPMScheduler")
    cls = getattr(diffusers, name, None)
    if cls is None:
        raise ValueError(f"unknown diffusers scheduler class {name!r} in the scheduler config")
    try:
        scheduler = cls.from_config(config)
    except NotImplementedError as err:
        raise ValueError(
            f"unsupported beta_schedule {config.get('beta_schedule')!r} for {name}: {err}. Supported are the "
            "scheduler's discrete schedules (e.g. 'linear', 'scaled_linear', 'squaredcos_cap_v2') or trained_betas"
        ) from err
    betas = getattr(scheduler, "betas", None)
    if not isinstance(betas, torch.Tensor) or betas.ndim != 1:
        raise ValueError(
            f"{name} has no discrete VP betas (e.g. a variance-exploding / continuous-time scheduler); "
            "DiffusersPrior needs a DDPM-type scheduler such as DDPMScheduler or DDIMScheduler"
        )
    betas = betas.to(torch.float64)
    if not bool(((betas > 0) & (betas < 1)).all()):
        raise ValueError(f"{name}'s betas must lie in (0, 1) (zero terminal SNR / rescaled betas are unsupported)")
    return betas


class DiffusersPrior(DiffusionPrior):
    """``eps_theta(x_t, t)`` from a local diffusers ``UNet2DModel``.

    Args:
        path: the model folder (``config.json`` + weights), or a pipeline folder with ``subfolder``.
        subfolder: e.g. ``"unet"`` for a pipeline folder; None when ``path`` is the model folder.
        class_label: label for class-conditional models (``num_class_embeds`` set); override
            per batch by setting ``class_labels`` ``(B,)``.
        channels_last: run the UNet in channels-last memory format.
    """

    def __init__(self, *, path: str, subfolder: str | None = None, class_label: int | None = None, channels_last: bool = False) -> None:
        diffusers = _import_diffusers()
        folder = Path(path).expanduser()
        if not folder.is_dir():
            raise FileNotFoundError(f"diffusers model folder not found: {str(folder)!r}; set path to a local folder "
                                    "written by save_pretrained (hub names are not downloaded)")
        unet = diffusers.UNet2DModel.from_pretrained(str(folder), subfolder=subfolder, local_files_only=True)
        cfg = unet.config
        sched_cfg = json.loads(find_scheduler_config(folder, subfolder).read_text())
        super().__init__(channels=cfg.in_channels, image_size=_square_size(cfg.sample_size), betas=scheduler_betas(sched_cfg))
        if cfg.time_embedding_type != "positional":
            raise ValueError(f"time_embedding_type={cfg.time_embedding_type!r} is not a discrete-time VP model; "
                             "only 'positional' UNet2DModels are supported")
        if cfg.out_channels not in (cfg.in_channels, 2 * cfg.in_channels):
            raise ValueError(f"out_channels={cfg.out_channels} must be in_channels ({cfg.in_channels}) or twice it "
                             "(learned variance)")
        self.prediction_type = sched_cfg.get("prediction_type", "epsilon")
        if self.prediction_type not in PREDICTION_TYPES:
            raise ValueError(f"unsupported prediction_type {self.prediction_type!r}; allowed: {PREDICTION_TYPES}")
        self.class_label = class_label
        self.class_labels: torch.Tensor | None = None
        self.channels_last = bool(channels_last)
        self.unet = unet.eval().requires_grad_(False)
        if self.channels_last:
            self.unet.to(memory_format=torch.channels_last)

    def train(self, mode: bool = True) -> "DiffusersPrior":
        """Keep the frozen UNet in eval mode whatever the parent's mode."""
        super().train(mode)
        self.unet.eval()
        return self

    def _labels(self, batch: int, device: torch.device) -> torch.Tensor | None:
        if self.unet.config.num_class_embeds is None and self.unet.config.class_embed_type is None:
            return None
        if self.class_labels is not None:
            return self.class_labels.to(device=device, dtype=torch.long).reshape(batch)
        if self.class_label is None:
            raise ValueError("this diffusers UNet is class-conditional: set class_label or class_labels (B,)")
        return torch.full((batch,), self.class_label, dtype=torch.long, device=device)

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``eps_hat`` ``(B, C, H, W)`` for ``x_t`` ``(B, C, H, W)`` and integer times ``t`` ``(B,)``."""
        if self.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        out = self.unet(x_t, t, class_labels=self._labels(x_t.shape[0], x_t.device)).sample[:, : self.channels]
        if self.prediction_type == "epsilon":
            return out
        a = self.alphas_cumprod[t].view(-1, 1, 1, 1)
        x, out = x_t.float(), out.float()
        if self.prediction_type == "v_prediction":
            return (a.sqrt() * out + (1 - a).sqrt() * x).float()
        return ((x - a.sqrt() * out) / (1 - a).sqrt()).float()  # "sample": out is x0


def _square_size(sample_size: Any) -> int | None:
    """``sample_size`` (int or (H, W)) as one side, or None when unknown or not square."""
    if isinstance(sample_size, int):
        return sample_size
    if isinstance(sample_size, (list, tuple)) and len(sample_size) == 2 and sample_size[0] == sample_size[1]:
        return int(sample_size[0])
    return None
