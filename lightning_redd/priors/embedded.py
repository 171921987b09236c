"""The project's own default prior: a small :class:`UNet` trained on 64x64 RGB photo patches.

One ``.safetensors`` file is self-describing: its tensors are the EMA weights of the network
and its metadata holds the network's constructor arguments (json) plus a description of the
training run. The shipped file lives at ``lightning_redd/priors/weights/embedded64.safetensors``
and is found through :mod:`importlib.resources`, so it works from an installed package.
"""
from __future__ import annotations

import importlib.resources
import json
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.priors.loaders import CheckpointError, CheckpointFileNotFound, CheckpointMismatchError, mismatch_report, resolve_path
from lightning_redd.priors.networks.attention import AttentionImpl, check_impl
from lightning_redd.priors.networks.unet import UNet
from lightning_redd.priors.speed import CpuBf16, prepare_network, resolve_cpu_bf16

#: File name of the shipped checkpoint inside ``lightning_redd/priors/weights/``.
DEFAULT_CHECKPOINT_NAME = "embedded64.safetensors"
#: Metadata key holding the network's constructor arguments (a json object).
NETWORK_KEY = "lightning_redd.network"
#: Metadata key holding a json description of the training run (step, dataset, ...).
TRAINING_KEY = "lightning_redd.training"
#: Metadata key naming the network class (only ``UNet`` for now).
ARCH_KEY = "lightning_redd.arch"

_TRAIN_HINT = (
    "train one with `lightning-redd-train fit --config configs/train_prior.yaml` and copy "
    "<trainer.default_root_dir>/embedded64.safetensors to {default}, or pass checkpoint=<path to a .safetensors file>"
)


def default_checkpoint_path() -> Path:
    """Where the shipped checkpoint lives inside the installed package (it may not exist yet)."""
    return Path(str(importlib.resources.files("lightning_redd.priors") / "weights" / DEFAULT_CHECKPOINT_NAME))


def save_network(network: UNet, path: str | Path, training: dict[str, Any] | None = None) -> Path:
    """Write ``network``'s weights (float32, contiguous) and its config as metadata to ``path``.

    Args:
        network: the :class:`UNet` to store (pass the EMA copy when exporting a training run).
        path: destination ``.safetensors`` file; parent folders are created.
        training: json-serialisable description of the run (step, dataset, ...).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tensors = {k: v.detach().to("cpu", torch.float32).contiguous() for k, v in network.state_dict().items()}
    metadata = {
        "format": "pt",
        ARCH_KEY: type(network).__name__,
        NETWORK_KEY: json.dumps(network.config, sort_keys=True),
        TRAINING_KEY: json.dumps(training or {}, sort_keys=True, default=str),
    }
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=metadata)
    tmp.chmod(0o644)
    tmp.replace(path)
    return path


def _open(path: str | Path):
    """``safe_open`` with errors that name the file (empty, truncated, not safetensors)."""
    resolve_path(path, _TRAIN_HINT.format(default=default_checkpoint_path()))
    try:
        return safe_open(str(path), framework="pt")
    except Exception as err:  # safetensors raises its own error type for broken files
        raise CheckpointError(f"cannot read embedded prior checkpoint {str(path)!r}: {err} (truncated, corrupt or not "
                              "a .safetensors file); copy it again or retrain it") from None


def read_metadata(path: str | Path) -> dict[str, Any]:
    """The decoded metadata of a checkpoint: ``{"arch", "network", "training"}``."""
    with _open(path) as f:
        meta = f.metadata() or {}
    if NETWORK_KEY not in meta:
        raise CheckpointError(
            f"{path} has no {NETWORK_KEY!r} metadata, so it was not written by lightning_redd's "
            "save_network; export it with lightning_redd.priors.embedded.save_network"
        )
    return {
        "arch": meta.get(ARCH_KEY, "UNet"),
        "network": json.loads(meta[NETWORK_KEY]),
        "training": json.loads(meta.get(TRAINING_KEY, "{}")),
    }


def load_network(path: str | Path) -> UNet:
    """Rebuild the :class:`UNet` described by ``path``'s metadata and load its weights (strict)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointFileNotFound(f"no embedded prior checkpoint at {path}; " + _TRAIN_HINT.format(default=default_checkpoint_path()))
    meta = read_metadata(path)
    if meta["arch"] != "UNet":
        raise CheckpointError(f"{path} stores a {meta['arch']!r} network; allowed: 'UNet'")
    cfg = dict(meta["network"])
    for key in ("channel_mult", "attention_resolutions"):
        cfg[key] = tuple(cfg[key])
    network = UNet(**cfg)
    state = {}
    with _open(path) as f:
        for key in f.keys():
            state[key] = f.get_tensor(key)
    report = mismatch_report(network, state)
    if report:
        raise CheckpointMismatchError(f"embedded prior checkpoint {path} does not fit the UNet its metadata describes:\n{report}")
    network.load_state_dict(state, strict=True)
    return network


def blend(start: str | Path, tuned: str | Path, weight: float, out: str | Path) -> Path:
    """Write ``(1 - weight) * start + weight * tuned``, weight by weight, to ``out``.

    Weight-space interpolation between a network and a fine-tune of it (both written by
    :func:`save_network`, e.g. by ``lightning-redd-train``'s export; one architecture): ``weight`` 0 is
    ``start``, 1 is ``tuned``; in between, a fine-tune that gained on some tasks and lost on others
    can keep part of each. Both files' training records go into ``out``'s."""
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"weight={weight}: need 0 <= weight <= 1 (0: {start}, 1: {tuned})")
    meta_a, meta_b = read_metadata(start), read_metadata(tuned)
    if meta_a["network"] != meta_b["network"]:
        raise ValueError(f"{start} and {tuned} hold different networks ({meta_a['network']} vs {meta_b['network']}): "
                         "only a network and a fine-tune of it can be blended")
    a, sb = load_network(start), load_network(tuned).state_dict()
    a.load_state_dict({k: torch.lerp(v.float(), sb[k].float(), weight) if v.is_floating_point() else v
                       for k, v in a.state_dict().items()})
    training = {"blend": {"weight": weight, "start": Path(start).name, "tuned": Path(tuned).name},
                "start": meta_a["training"], "tuned": meta_b["training"]}
    return save_network(a, out, training)


class EmbeddedPrior(DiffusionPrior):
    """The shipped 64x64 RGB eps-prediction prior (or any checkpoint written by :func:`save_network`).

    Inputs ``x_t`` ``(B, 3, 64, 64)`` on the spec's linear schedule (``x0`` in ``[-1, 1]``);
    the network is frozen and always in eval mode.

    Args:
        checkpoint: path to a ``.safetensors`` file; ``None``: the one shipped in the package
            (``lightning_redd/priors/weights/embedded64.safetensors``).
        cpu_bf16: bfloat16 autocast around the network on the CPU when no other autocast is
            active (e.g. under ``trainer.precision: 32-true``): ``"off"`` (default: float32,
            bit-identical to before the switch), ``"on"``, ``"auto"`` (on only where the CPU has
            bf16 matrix instructions, AMX or AVX512-BF16: there a forward takes 0.47x (AMX) to
            0.62x (AVX512-BF16) the float32 time and the demo's mean PSNR moves by less than
            0.05 dB; elsewhere bf16 is slower and ``"auto"`` stays float32; the demo config
            sets ``"auto"``).
            ``cpu_bf16_active`` says what this machine got. See docs/PERFORMANCE.md.
        channels_last, attention, compile, sync_checks: speed switches, none of which changes a
            state-dict key (:mod:`lightning_redd.priors.speed`): channels-last memory format
            (on: 0.77-0.83x the time of a forward on this project's CPU; the demo's PNGs differ
            from the default memory format's on 2 pixels by 1 level, PSNR equal to 4 decimals;
            see docs/PERFORMANCE.md), the attention kernel (``"auto"``: see the module; ``"sdpa"``; ``"math"``: the explicit product),
            ``torch.compile`` of the network (off), host-side checks of ``t`` (off).
    """

    def __init__(self, *, checkpoint: str | None = None, channels_last: bool = True, attention: AttentionImpl = "auto",
                 compile: bool = False, sync_checks: bool = False, cpu_bf16: CpuBf16 = "off") -> None:
        path = default_checkpoint_path() if checkpoint is None else Path(checkpoint)
        network = load_network(path)
        self._setup(network, channels_last=channels_last, attention=attention, compile=compile, sync_checks=sync_checks,
                    cpu_bf16=cpu_bf16)
        self.checkpoint = str(path)
        self.metadata = read_metadata(path)

    @classmethod
    def from_network(cls, network: UNet, *, channels_last: bool = True, attention: AttentionImpl = "auto",
                     compile: bool = False, sync_checks: bool = False, cpu_bf16: CpuBf16 = "off") -> "EmbeddedPrior":
        """Wrap an in-memory :class:`UNet` (e.g. a freshly trained or random one) without a file,
        with the constructor's speed switches."""
        prior = cls.__new__(cls)
        prior._setup(network, channels_last=channels_last, attention=attention, compile=compile, sync_checks=sync_checks,
                     cpu_bf16=cpu_bf16)
        prior.checkpoint = None
        prior.metadata = {"arch": type(network).__name__, "network": dict(network.config), "training": {}}
        return prior

    def _setup(self, network: UNet, *, channels_last: bool = False, attention: AttentionImpl = "auto",
               compile: bool = False, sync_checks: bool = False, cpu_bf16: CpuBf16 = "off") -> None:
        cfg = network.config
        DiffusionPrior.__init__(self, channels=cfg["in_channels"], image_size=cfg["image_size"], sync_checks=sync_checks)
        self.channels_last, self.attention, self.compile = bool(channels_last), check_impl(attention), bool(compile)
        self.cpu_bf16 = cpu_bf16
        #: whether the network runs under bfloat16 autocast on the CPU (``cpu_bf16`` resolved here)
        self.cpu_bf16_active = resolve_cpu_bf16(cpu_bf16)
        self.network = prepare_network(network, attention=attention, channels_last=self.channels_last, compile=self.compile)

    @property
    def whole_image_multiple(self) -> int:
        """``2 ** (levels - 1)`` (8 for the shipped network): its stride-2 downsamplings and x2
        upsamplings must meet the skips at equal sizes. Nothing else fixes the size (attention has
        no positional embedding, the time embedding is per image), but GroupNorm statistics and
        self-attention then span the whole image, unlike in training: measured worse than tiles
        (:mod:`lightning_redd.priors.tiled`)."""
        return 2 ** (len(self.network.config["channel_mult"]) - 1)

    def train(self, mode: bool = True) -> "EmbeddedPrior":
        """Keep the frozen network in eval mode whatever the parent module does."""
        super().train(mode)
        self.network.eval()
        return self

    def predict_eps(self, x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        """``eps_hat`` ``(B, C, S, S)`` for ``x_t`` ``(B, C, S, S)`` and integer times ``t`` ``(B,)``."""
        x = x_t.to(next(self.network.parameters()).dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if self.cpu_bf16_active and x.device.type == "cpu" and not torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return self.network(x, t)
        return self.network(x, t)
