"""Training the embedded prior: DDPM eps-prediction on the spec's schedule, with EMA weights.

Loss (Ho et al. 2020, "simple"): ``t ~ U{0..T-1}``, ``eps ~ N(0, I)``,
``x_t = sqrt(abar_t) x0 + sqrt(1 - abar_t) eps``, ``L = mean((eps_theta(x_t, t) - eps)^2)``.
At the end of fit the EMA weights are exported to ``<default_root_dir>/embedded64.safetensors``
(see :mod:`lightning_redd.priors.embedded`) and a grid of DDIM samples to ``samples.png``.

``python -m lightning_redd.lit.train_prior sample --out docs/samples.png`` regenerates the grid
from a checkpoint (default: the shipped one); ``... export RUN/last.ckpt OUT.safetensors`` writes the
EMA weights of a training checkpoint (an interrupted run, or one epoch's); ``... blend`` interpolates two.
"""
from __future__ import annotations

import argparse
import copy
import math
from pathlib import Path

import lightning as L
import torch
import torch.nn.functional as F
from PIL import Image
from torchvision.utils import make_grid

from lightning_redd.priors import schedules
from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.priors.embedded import DEFAULT_CHECKPOINT_NAME, EmbeddedPrior, blend, load_network, save_network
from lightning_redd.priors.networks.unet import UNet, count_parameters
from lightning_redd.solvers import grids


@torch.no_grad()
def ddim_sample(
    prior: DiffusionPrior,
    num_images: int,
    *,
    steps: int = 100,
    eta: float = 0.0,
    generator: torch.Generator | None = None,
    image_size: int | None = None,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Unconditional DDIM samples (Song et al. 2021, eq. 12) ``(N, C, S, S)`` clipped to ``[-1, 1]``.

    Visits ``timestep_grid(steps)`` in descending order; the ``x0`` prediction is clipped to
    ``[-1, 1]`` and ``eps`` re-derived from it. ``eta = 0`` is deterministic given the initial
    noise, ``eta = 1`` is DDPM-like. Noise is drawn on the CPU from ``generator``.
    """
    if not 0.0 <= eta <= 1.0:
        raise ValueError(f"eta must be in [0, 1], got {eta}")
    size = image_size or prior.image_size
    if size is None:
        raise ValueError("this prior has no fixed image_size; pass image_size=")
    device = torch.device(device) if device is not None else prior.alphas_cumprod.device
    abar = prior.alphas_cumprod.to(device, torch.float64)
    shape = (num_images, prior.channels, size, size)
    x = torch.randn(shape, generator=generator).to(device)
    times = grids.timestep_grid(steps, prior.num_timesteps).flip(0).tolist()
    for i, t in enumerate(times):
        a = abar[t]
        a_prev = abar[times[i + 1]] if i + 1 < len(times) else torch.ones((), dtype=torch.float64, device=device)
        eps_hat = prior.eps(x, torch.full((num_images,), t, device=device, dtype=torch.long))
        x0 = ((x - (1 - a).sqrt() * eps_hat) / a.sqrt()).clamp(-1, 1)
        eps_hat = (x - a.sqrt() * x0) / (1 - a).sqrt()
        sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).sqrt()
        x = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp_min(0).sqrt() * eps_hat
        if eta > 0:
            x = x + sigma * torch.randn(shape, generator=generator).to(device)
        x = x.float()
    return x.clamp(-1, 1)


def save_grid(images: torch.Tensor, path: str | Path, nrow: int | None = None) -> Path:
    """Write ``images`` ``(N, C, H, W)`` in ``[-1, 1]`` as one PNG grid."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    nrow = nrow or max(1, int(math.ceil(math.sqrt(images.shape[0]))))
    grid = make_grid(images.float().cpu().clamp(-1, 1) * 0.5 + 0.5, nrow=nrow, padding=2, pad_value=1.0)
    array = (grid * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    Image.fromarray(array).save(path)
    return path


def sample(
    checkpoint: str | None = None,
    out: str | Path = "samples.png",
    *,
    num_images: int = 16,
    steps: int = 100,
    eta: float = 0.0,
    seed: int = 0,
    device: str = "cpu",
) -> Path:
    """Regenerate the sample grid of a checkpoint (``None``: the shipped prior) into ``out``."""
    prior = EmbeddedPrior(checkpoint=checkpoint).to(device)
    images = ddim_sample(prior, num_images, steps=steps, eta=eta, generator=torch.Generator().manual_seed(seed))
    return save_grid(images, out)


OBJECTIVE = "eps-prediction, MSE, uniform t, linear betas 1e-4..0.02, T=1000"


def _tuples(config: dict) -> dict:
    """A network config with its sequences as tuples (configs, metadata and checkpoints hold lists)."""
    return {k: tuple(v) if isinstance(v, (tuple, list)) else v for k, v in config.items()}


def _training_record(hp, network: UNet, global_step: int, dataset: str, **extra) -> dict:
    """The ``training`` metadata of an exported checkpoint, from the module's hyper-parameters."""
    return {"global_step": int(global_step), "ema_decay": hp.get("ema_decay"), "lr": hp.get("lr"),
            "parameters": count_parameters(network), "dataset": dataset,
            "init_weights": Path(hp["init_weights"]).name if hp.get("init_weights") else "random",
            "objective": OBJECTIVE, **extra}


class DDPMModule(L.LightningModule):
    """Trains a :class:`UNet` to predict ``eps`` on the spec's linear schedule (T = 1000).

    Batches are ``(B, C, S, S)`` images in ``[-1, 1]`` (or 1-tuples of them).

    Args:
        network: the UNet to train (``class_path``/``init_args`` in the config).
        lr: AdamW learning rate after warmup (constant afterwards).
        weight_decay: AdamW weight decay.
        betas: AdamW betas.
        warmup_steps: linear learning-rate warmup from 0 (0: none).
        ema_decay: EMA decay per optimizer step, in ``[0, 1]``; the EMA copy is what gets exported.
        ema_warmup: use ``min(ema_decay, (1 + n) / (10 + n))`` at step ``n`` so early EMA follows the weights.
        num_samples: images in the exported sample grid (0: no grid).
        sample_steps: DDIM steps for the grid.
        sample_seed: seed of the grid's initial noise.
        export_name: file name of the exported EMA checkpoint inside ``default_root_dir``.
        dataset_description: text stored in the checkpoint's metadata (default: asked of the
            DataModule's ``describe()`` when it has one).
        channels_last: train in channels-last memory format (faster convolutions on tensor-core GPUs).
        init_weights: start from these weights (a ``.safetensors`` written by :meth:`export`, e.g. the
            shipped prior) instead of the network's random initialisation: fine-tuning. The file's network
            must be the configured one (same hyper-parameters); the EMA copy starts from them too.
    """

    def __init__(
        self,
        network: UNet,
        *,
        lr: float = 2e-4,
        weight_decay: float = 0.0,
        betas: tuple[float, float] = (0.9, 0.999),
        warmup_steps: int = 500,
        ema_decay: float = 0.999,
        ema_warmup: bool = True,
        num_samples: int = 64,
        sample_steps: int = 100,
        sample_seed: int = 0,
        export_name: str = DEFAULT_CHECKPOINT_NAME,
        dataset_description: str | None = None,
        channels_last: bool = False,
        init_weights: str | None = None,
    ) -> None:
        super().__init__()
        if not 0.0 <= ema_decay <= 1.0:
            raise ValueError(f"ema_decay must be in [0, 1], got {ema_decay}")
        if lr <= 0 or warmup_steps < 0 or num_samples < 0 or sample_steps < 1:
            raise ValueError("need lr > 0, warmup_steps >= 0, num_samples >= 0, sample_steps >= 1")
        self.save_hyperparameters(ignore=["network"])
        self.hparams["network_config"] = dict(network.config)
        if init_weights is not None:
            start = load_network(init_weights)
            if _tuples(start.config) != _tuples(network.config):
                raise ValueError(f"init_weights={init_weights} holds a UNet {dict(start.config)}, "
                                 f"not the configured {dict(network.config)}: set model.network to match it")
            network.load_state_dict(start.state_dict(), strict=True)
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
        self.network = network
        self.ema = copy.deepcopy(network).requires_grad_(False)
        abar = schedules.alphas_cumprod(schedules.linear_betas())
        self.register_buffer("alphas_cumprod", abar.float(), persistent=False)

    @staticmethod
    def _images(batch: torch.Tensor | tuple | list) -> torch.Tensor:
        return batch[0] if isinstance(batch, (tuple, list)) else batch

    def diffusion_loss(self, network: UNet, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """``mean((eps_theta(x_t, t) - eps)^2)`` with uniform ``t`` and Gaussian ``eps``; a scalar."""
        b = x0.shape[0]
        t = torch.randint(0, self.alphas_cumprod.numel(), (b,), generator=generator).to(x0.device)
        eps = torch.randn(x0.shape, generator=generator).to(x0.device) if generator else torch.randn_like(x0)
        a = self.alphas_cumprod[t].view(b, 1, 1, 1)
        x_t = a.sqrt() * x0 + (1 - a).sqrt() * eps
        if self.hparams.channels_last:
            x_t = x_t.contiguous(memory_format=torch.channels_last)
        return F.mse_loss(network(x_t, t).float(), eps)

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        loss = self.diffusion_loss(self.network, self._images(batch))
        self.log("train/loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch, batch_idx: int) -> None:
        """Eps MSE of both the raw and the EMA weights on fixed noise and times (seeded by batch index)."""
        x0 = self._images(batch)
        for name, net in (("loss", self.network), ("ema_loss", self.ema)):
            g = torch.Generator().manual_seed(1000 + batch_idx)
            self.log(f"val/{name}", self.diffusion_loss(net, x0, g), prog_bar=name == "ema_loss", sync_dist=True)

    def configure_optimizers(self):
        hp = self.hparams
        opt = torch.optim.AdamW(self.network.parameters(), lr=hp.lr, betas=tuple(hp.betas), weight_decay=hp.weight_decay)
        warm = max(1, hp.warmup_steps)
        sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda step: min(1.0, (step + 1) / warm))
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def ema_decay_now(self) -> float:
        """The EMA decay used for the update after the current optimizer step."""
        n = self.global_step
        decay = self.hparams.ema_decay
        return min(decay, (1 + n) / (10 + n)) if self.hparams.ema_warmup else decay

    @torch.no_grad()
    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:
        """``ema <- decay * ema + (1 - decay) * weights`` for parameters; buffers are copied."""
        decay = self.ema_decay_now()
        ema_p = list(self.ema.parameters())
        torch._foreach_lerp_(ema_p, [p.detach() for p in self.network.parameters()], 1.0 - decay)
        for eb, b in zip(self.ema.buffers(), self.network.buffers()):
            eb.copy_(b)
        if self._trainer is not None:
            self.log("train/ema_decay", decay)

    def on_train_end(self) -> None:
        """Export the EMA weights and a sample grid into ``default_root_dir`` (global rank 0 only)."""
        if self.trainer.is_global_zero:
            self.export(Path(self.trainer.default_root_dir))

    def _dataset_description(self) -> str:
        if self.hparams.dataset_description:
            return self.hparams.dataset_description
        dm = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        return dm.describe() if dm is not None and hasattr(dm, "describe") else "unknown"

    def export(self, out_dir: str | Path) -> Path:
        """Write ``<out_dir>/<export_name>`` (EMA weights + metadata) and ``<out_dir>/samples.png``."""
        out_dir = Path(out_dir)
        training = _training_record(self.hparams, self.ema, self.global_step, self._dataset_description())
        path = save_network(self.ema, out_dir / self.hparams.export_name, training)
        if self.hparams.num_samples > 0:
            prior = EmbeddedPrior.from_network(copy.deepcopy(self.ema).float()).to(self.device)
            g = torch.Generator().manual_seed(self.hparams.sample_seed)
            images = ddim_sample(prior, self.hparams.num_samples, steps=self.hparams.sample_steps, generator=g)
            save_grid(images, out_dir / "samples.png")
        return path


def export_checkpoint(ckpt: str | Path, out: str | Path) -> Path:
    """Write the EMA weights of a training checkpoint (e.g. an interrupted run's ``last.ckpt``) to ``out``.

    The checkpoint is read with ``weights_only=True`` (no code from the file is run)."""
    state = torch.load(str(ckpt), map_location="cpu", weights_only=True)
    hp = state.get("hyper_parameters", {})
    if "network_config" not in hp or not any(k.startswith("ema.") for k in state.get("state_dict", {})):
        raise ValueError(f"{ckpt} is not a checkpoint of lightning-redd-train (no network_config or EMA weights)")
    network = UNet(**_tuples(hp["network_config"]))
    network.load_state_dict({k[len("ema."):]: v for k, v in state["state_dict"].items() if k.startswith("ema.")}, strict=True)
    data = state.get("datamodule_hyper_parameters", {})
    dataset = hp.get("dataset_description") or (f"folder {data['folder']}" if data.get("folder") else "scikit-image sample photos")
    training = _training_record(hp, network, state.get("global_step", -1), dataset, exported_from=Path(ckpt).name)
    return save_network(network, out, training)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lightning_redd.lit.train_prior")
    sub = parser.add_subparsers(dest="command", required=True)
    cmd = sub.add_parser("sample", help="write a DDIM sample grid of a checkpoint")
    cmd.add_argument("--checkpoint", default=None, help="a .safetensors file (default: the shipped prior)")
    cmd.add_argument("--out", default="samples.png")
    cmd.add_argument("--num-images", type=int, default=64)
    cmd.add_argument("--steps", type=int, default=100)
    cmd.add_argument("--eta", type=float, default=0.0)
    cmd.add_argument("--seed", type=int, default=0)
    cmd.add_argument("--device", default="cpu")
    exp = sub.add_parser("export", help="write the EMA weights of a training checkpoint (.ckpt) as .safetensors")
    exp.add_argument("ckpt")
    exp.add_argument("out")
    mix = sub.add_parser("blend", help="interpolate two exports of one network: (1 - w) * START + w * TUNED")
    for name in ("start", "tuned"):
        mix.add_argument(name)
    mix.add_argument("--weight", type=float, required=True, help="0: START, 1: TUNED")
    mix.add_argument("--out", required=True)
    args = parser.parse_args(argv)
    if args.command == "blend":
        print(blend(args.start, args.tuned, args.weight, args.out))
    elif args.command == "export":
        print(export_checkpoint(args.ckpt, args.out))
    else:
        print(sample(args.checkpoint, args.out, num_images=args.num_images, steps=args.steps, eta=args.eta,
                     seed=args.seed, device=args.device))


if __name__ == "__main__":
    main()
