"""Top-1 / top-5 accuracy of a timm ImageNet classifier on restored images.

The model is ``timm.create_model(model, pretrained=False)`` (nothing downloaded) with weights
from a local state-dict file: ``weights=``, else ``$TORCH_HOME/hub/checkpoints/<file name of
the model's timm pretrained URL>`` (``resnet50.tv_in1k``: ``resnet50-0676ba61.pth``, the
torchvision ResNet-50 weights), else an error naming the file and where to get it. Models
published only on the Hugging Face hub need an explicit ``weights=`` path (their
``model.safetensors``).

Preprocessing follows the model's timm pretrained config, on tensors: ``[-1, 1]`` to
``[0, 1]``, resize (antialiased, the config's bilinear/bicubic) so the shorter side is
``floor(input_size / crop_pct)``, centre crop ``input_size``, normalise with its mean/std.
This is timm's eval transform up to PIL-versus-torch resampling differences.
"""
from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
import torch.nn.functional as F

from lightning_redd.metrics.base import DatasetMetric, Gather
from lightning_redd.metrics.labels import load_labels, name_key
from lightning_redd.metrics.weights import load_into, load_state_dict_file, module_device, resolve_weights, to_rgb

DEFAULT_CLASSIFIER = "resnet50.tv_in1k"


def build_classifier(model: str, weights: str | os.PathLike | None = None) -> tuple[torch.nn.Module, dict]:
    """The frozen timm classifier on the CPU and its pretrained config (a dict)."""
    import timm

    try:
        net = timm.create_model(model, pretrained=False)
    except RuntimeError as err:
        raise ValueError(f"unknown timm model {model!r} ({err}); see timm.list_models(pretrained=True)") from err
    cfg = dict(net.pretrained_cfg)
    url, hub_id = cfg.get("url") or "", cfg.get("hf_hub_id") or ""
    file_names = [Path(url).name] if url else []
    source = url or (f"https://huggingface.co/{hub_id} (file model.safetensors)" if hub_id else "the model's authors")
    what = f"top-k classifier (timm {model})"
    if not file_names and weights is None:
        raise FileNotFoundError(f"{what}: no default file name for this model; pass classifier_weights=<path> (obtain it from {source})")
    path = resolve_weights(weights, file_names=file_names, what=what, source=source, argument="classifier_weights")
    load_into(net, load_state_dict_file(path, what=what), path=path, what=what)
    net.requires_grad_(False)
    return net.eval(), cfg


def preprocess(x: torch.Tensor, cfg: Mapping) -> torch.Tensor:
    """``(B, 3, H, W)`` in ``[-1, 1]`` to the classifier's normalised ``(B, 3, S, S)`` input."""
    size = int(cfg["input_size"][-1])
    crop_pct = float(cfg.get("crop_pct") or 1.0)
    mode = "bicubic" if cfg.get("interpolation") == "bicubic" else "bilinear"
    x = (x.float().clamp(-1, 1) + 1) / 2
    short = math.floor(size / crop_pct)
    h, w = x.shape[-2:]
    scale = short / min(h, w)
    new_hw = (max(size, round(h * scale)), max(size, round(w * scale)))
    if new_hw != (h, w):
        x = F.interpolate(x, size=new_hw, mode=mode, antialias=True, align_corners=False).clamp(0, 1)
    top, left = (new_hw[0] - size) // 2, (new_hw[1] - size) // 2
    x = x[..., top:top + size, left:left + size]
    mean = torch.tensor(cfg["mean"], device=x.device).view(1, -1, 1, 1)
    std = torch.tensor(cfg["std"], device=x.device).view(1, -1, 1, 1)
    return (x - mean) / std


class TopKAccuracy(DatasetMetric):
    """Top-1 and top-5 accuracy (fractions in ``[0, 1]``) of a timm classifier.

    ``update(x, ref=None, names=..., targets=None)``: ``x (B, 3, H, W)`` in ``[-1, 1]``
    (``ref`` is ignored); the true classes are ``targets (B,)`` or looked up by ``names``
    (image name stems) in ``labels``. ``compute`` returns ``top1``, ``top5`` and ``classifier_n_images``.

    Args:
        model: timm model name (default ``resnet50.tv_in1k``, torchvision's ResNet-50).
        weights: local weight file (see the module docstring).
        labels: ``{name: class index}`` or a label file for :func:`~lightning_redd.metrics.labels.load_labels`.
        synset_mapping: mapping file for synset labels in a label file.
        ks: the ``k`` of each reported ``top{k}``.
    """

    names = ("top1", "top5")

    def __init__(
        self,
        model: str = DEFAULT_CLASSIFIER,
        *,
        weights: str | os.PathLike | None = None,
        labels: Mapping[str, int] | str | os.PathLike | None = None,
        synset_mapping: str | os.PathLike | None = None,
        ks: Sequence[int] = (1, 5),
    ) -> None:
        super().__init__()
        self.model, self.weights, self.ks = model, weights, tuple(int(k) for k in ks)
        if isinstance(labels, (str, os.PathLike)):
            labels = load_labels(labels, synset_mapping=synset_mapping)
        self.labels = {name_key(k): int(v) for k, v in labels.items()} if labels is not None else None
        self._net: torch.nn.Module | None = None
        self._cfg: dict = {}
        self.add_state("hits", (len(self.ks),))

    def network(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        if self._net is None:
            self._net, self._cfg = build_classifier(self.model, self.weights)
        if module_device(self._net) != torch.device(device):
            self._net.to(device)
        return self._net

    def _targets(self, names: Sequence[str] | None, n: int, device) -> torch.Tensor:
        if names is None or self.labels is None:
            raise ValueError("TopKAccuracy.update needs targets= or names= together with labels= (a label file or dict)")
        missing = [nm for nm in names if name_key(nm) not in self.labels]
        if missing or len(names) != n:
            raise ValueError(f"no label for {missing[:5]} ({len(missing)} of {len(names)} names); add them to the label file")
        return torch.tensor([self.labels[name_key(nm)] for nm in names], device=device)

    def hits(self, x: torch.Tensor, names: Sequence[str] | None = None, targets: torch.Tensor | None = None) -> torch.Tensor:
        """``(B, len(ks))`` float 0/1: whether each image's class is among the top ``k``
        predictions, for each ``k`` of :attr:`ks` (classes from ``targets`` or ``names``)."""
        x = to_rgb(x, what="top-k accuracy")
        net = self.network(x.device)
        y = targets.to(x.device).long() if targets is not None else self._targets(names, x.shape[0], x.device)
        with torch.no_grad():
            logits = net(preprocess(x, self._cfg))
        if int(y.max()) >= logits.shape[1] or int(y.min()) < 0:
            raise ValueError(f"class indices must lie in [0, {logits.shape[1]}) for {self.model}, got {int(y.min())}..{int(y.max())}")
        top = logits.topk(min(max(self.ks), logits.shape[1]), dim=1).indices
        return torch.stack([(top[:, :k] == y[:, None]).any(dim=1) for k in self.ks], dim=1).float()

    def update(self, x, ref=None, names=None, targets: torch.Tensor | None = None) -> None:
        self.append("hits", self.hits(x, names, targets))

    def compute(self, gather: Gather | None = None) -> dict[str, float]:
        hits = self.synced_states(gather)["hits"]
        if hits.shape[0] == 0:
            raise ValueError("TopKAccuracy.compute before any update")
        out = {f"top{k}": float(hits[:, i].mean()) for i, k in enumerate(self.ks)}
        out["classifier_n_images"] = float(hits.shape[0])
        return out
