"""LPIPS (Zhang et al. 2018, "The Unreasonable Effectiveness of Deep Features as a Perceptual
Metric"), version 0.1 linear heads, as computed by the ``lpips`` package and torchmetrics'
``LearnedPerceptualImagePatchSimilarity`` (default ``net="alex"``: AlexNet backbone).

Not the variant of piq's ``LPIPS(replace_pooling=True)`` (max pooling replaced by average
pooling), used by e.g. InverseBench and DAPS: its numbers differ from these.

Per image: scale the input (``(x - shift) / scale``, the lpips package's ImageNet statistics
in ``[-1, 1]`` units), take the backbone's ReLU outputs at 5 depths (7 for SqueezeNet),
normalise each feature vector to unit length over channels, square the difference of the
two images' features, weight the channels with the learned 1x1 head, average over space and
sum over depths. Inputs are used at their own resolution (no resizing).

Weights: the heads are the v0.1 files shipped inside torchmetrics' wheel
(``torchmetrics/functional/image/lpips_models/{alex,vgg,squeeze}.pth``, identical to the
``lpips`` package's ``weights/v0.1``); the backbone is torchvision's ImageNet checkpoint,
read from a local file (see :mod:`lightning_redd.metrics.weights`) and never downloaded.
"""
from __future__ import annotations

import os
from importlib import resources
from pathlib import Path
from typing import Literal

import torch
from torch import nn

from lightning_redd.metrics.weights import load_into, load_state_dict_file, module_device, resolve_weights, to_rgb

# net -> (torchvision constructor, torchvision checkpoint file, feature indices that end each depth)
BACKBONES: dict[str, tuple[str, str, tuple[int, ...]]] = {
    "alex": ("alexnet", "alexnet-owt-7be5be79.pth", (2, 5, 8, 10, 12)),
    "vgg": ("vgg16", "vgg16-397923af.pth", (4, 9, 16, 23, 30)),
    "squeeze": ("squeezenet1_1", "squeezenet1_1-b8a52dc0.pth", (2, 5, 8, 10, 11, 12, 13)),
}
# smallest square input each backbone accepts (its last kept feature map is at least 1x1)
MIN_SIZE = {"alex": 31, "vgg": 16, "squeeze": 17}
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def head_file(net: str) -> Path:
    """The v0.1 linear-head weights shipped in torchmetrics' wheel for ``net``."""
    try:
        root = resources.files("torchmetrics.functional.image")
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError("LPIPS needs torchmetrics (it ships the linear heads): pip install torchmetrics") from err
    path = Path(str(root / "lpips_models" / f"{net}.pth"))
    if not path.is_file():
        raise FileNotFoundError(f"LPIPS heads {path} missing from the torchmetrics install; reinstall torchmetrics>=1.0")
    return path


class LPIPSNetwork(nn.Module):
    """Backbone slices + linear heads; ``forward(a, b) -> (B,)`` for scaled inputs."""

    def __init__(self, features: nn.Sequential, ends: tuple[int, ...], heads: list[torch.Tensor]) -> None:
        super().__init__()
        starts = (0,) + ends[:-1]
        self.slices = nn.ModuleList(nn.Sequential(*list(features)[s:e]) for s, e in zip(starts, ends))
        for i, w in enumerate(heads):
            self.register_buffer(f"head{i}", w.reshape(-1).float().clone())
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.requires_grad_(False)
        self.eval()

    def train(self, mode: bool = True) -> LPIPSNetwork:  # frozen: always in eval mode
        return super().train(False)

    def forward(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        h = (torch.cat([x, ref]) - self.shift) / self.scale
        total = torch.zeros(x.shape[0], device=x.device, dtype=h.dtype)
        for i, block in enumerate(self.slices):
            h = block(h)
            f = h / (h.pow(2).sum(dim=1, keepdim=True) + 1e-8).sqrt()  # unit length over channels
            fa, fb = f.chunk(2)
            w = getattr(self, f"head{i}").view(1, -1, 1, 1)
            total = total + ((fa - fb).pow(2) * w).sum(dim=1).mean(dim=(1, 2))
        return total


def build_lpips_network(net: str, weights: str | os.PathLike | None = None) -> LPIPSNetwork:
    """The frozen LPIPS network on the CPU, backbone from a local torchvision checkpoint."""
    import torchvision

    if net not in BACKBONES:
        raise ValueError(f"unknown LPIPS net {net!r}; allowed: {tuple(BACKBONES)}")
    ctor, file_name, ends = BACKBONES[net]
    what = f"LPIPS {net} backbone (torchvision {ctor})"
    path = resolve_weights(
        weights, file_names=[file_name], what=what, argument="lpips_weights",
        source=f"https://download.pytorch.org/models/{file_name} (torchvision's ImageNet weights)",
    )
    model = getattr(torchvision.models, ctor)(weights=None)  # weights=None: never downloads
    load_into(model, load_state_dict_file(path, what=what), path=path, what=what)
    heads_path = head_file(net)
    heads = torch.load(heads_path, map_location="cpu", weights_only=True)  # saved on CUDA: map it
    head_list = [heads[f"lin{i}.model.1.weight"] for i in range(len(ends))]
    return LPIPSNetwork(model.features, ends, head_list)


class LPIPS:
    """LPIPS distance per image: ``lpips(x, ref) -> (B,)`` float32, lower is more similar.

    Inputs ``(B, 3, H, W)`` (or ``(B, 1, H, W)``, channel repeated) in ``[-1, 1]``, clipped to
    that range; ``H, W >= MIN_SIZE[net]`` (31 for AlexNet, 16 VGG, 17 SqueezeNet). The network is built on first use
    (once) and moved to the input's device; no gradient flows through it.

    Args:
        net: backbone, ``"alex"`` (the usual LPIPS), ``"vgg"`` (VGG16) or ``"squeeze"``.
        weights: torchvision checkpoint of the backbone; default
            ``$TORCH_HOME/hub/checkpoints/alexnet-owt-7be5be79.pth`` (``vgg16-397923af.pth``,
            ``squeezenet1_1-b8a52dc0.pth``).
    """

    def __init__(self, net: Literal["alex", "vgg", "squeeze"] = "alex", *, weights: str | os.PathLike | None = None) -> None:
        if net not in BACKBONES:
            raise ValueError(f"unknown LPIPS net {net!r}; allowed: {tuple(BACKBONES)}")
        self.net, self.weights = net, weights
        self._network: LPIPSNetwork | None = None

    def network(self, device: torch.device | str = "cpu") -> LPIPSNetwork:
        """The network, built once and moved to ``device``."""
        if self._network is None:
            self._network = build_lpips_network(self.net, self.weights)
        if module_device(self._network) != torch.device(device):
            self._network.to(device)
        return self._network

    def __call__(self, x: torch.Tensor, ref: torch.Tensor) -> torch.Tensor:
        if x.shape != ref.shape:
            raise ValueError(f"lpips needs equal shapes, got {tuple(x.shape)} and {tuple(ref.shape)}")
        x, ref = to_rgb(x, what="lpips"), to_rgb(ref, what="lpips")
        if min(x.shape[-2:]) < MIN_SIZE[self.net]:
            raise ValueError(f"lpips with net={self.net!r} needs images of at least {MIN_SIZE[self.net]} pixels a side, got {tuple(x.shape[-2:])}")
        network = self.network(x.device)
        with torch.no_grad():
            return network(x.float().clamp(-1, 1), ref.float().clamp(-1, 1))
