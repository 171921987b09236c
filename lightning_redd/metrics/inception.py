"""KID and FID from the FID Inception network, weights read from a local file.

Network: torch-fidelity's ``FeatureExtractorInceptionV3`` (the TF-ported Inception of the
original TTUR FID code, graph ``2015-12-05``, with TensorFlow-1-compatible bilinear resizing
to 299x299), 2048-d pool3 features. These are the features of published FIDs (TTUR,
torch-fidelity, pytorch-fid, clean-fid's "legacy" mode up to resizing details), not those of
torchvision's ``inception_v3`` ImageNet classifier.

Weights, never downloaded: ``weights=`` or ``$TORCH_HOME/hub/checkpoints/`` holding
``weights-inception-2015-12-05-6726825d.pth`` (torch-fidelity's release file) or
``pt_inception-2015-12-05-6726825d.pth`` (pytorch-fid's; same state-dict layout and the same
sha256 prefix). The file is first checked with ``torch.load(weights_only=True)``, so the
unrestricted load inside torch-fidelity only ever sees plain tensors.

Inputs ``(B, 3, H, W)`` in ``[-1, 1]`` (grey ``(B, 1, H, W)`` repeats its channel) are
clipped and quantised to 8 bits, ``round((x + 1) * 127.5)``, as when saved to PNG.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Sequence

import torch

from lightning_redd.metrics.base import DatasetMetric, Gather
from lightning_redd.metrics.distances import frechet_distance, kernel_inception_distance
from lightning_redd.metrics.weights import file_sha256, load_state_dict_file, module_device, resolve_weights, to_rgb

INCEPTION_FILES = ("weights-inception-2015-12-05-6726825d.pth", "pt_inception-2015-12-05-6726825d.pth")
INCEPTION_SOURCE = (
    "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/weights-inception-2015-12-05-6726825d.pth "
    "(or pytorch-fid's https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth)"
)
_WHAT = "FID/KID Inception (torch-fidelity inception-v3-compat)"


def to_uint8(x: torch.Tensor) -> torch.Tensor:
    """``[-1, 1]`` floats to ``[0, 255]`` uint8: clip, then ``round((x + 1) * 127.5)``."""
    return ((x.float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


class InceptionFeatures:
    """``features(x) -> (B, 2048)`` float32 pool3 features of ``x (B, 3, H, W)`` in ``[-1, 1]``.

    The network is built on first use (once) and moved to the input's device.
    ``fingerprint`` identifies the weights (their sha256) for caches of folder features.
    """

    dim = 2048
    kind = "fid-inception-pool3"

    def __init__(self, weights: str | os.PathLike | None = None) -> None:
        self.weights = weights
        self._network: torch.nn.Module | None = None

    @property
    def path(self):
        return resolve_weights(self.weights, file_names=INCEPTION_FILES, what=_WHAT, source=INCEPTION_SOURCE, argument="inception_weights")

    @property
    def fingerprint(self) -> str:
        return f"{self.kind}:sha256={file_sha256(self.path)}"

    def network(self, device: torch.device | str = "cpu") -> torch.nn.Module:
        if self._network is None:
            self._network = _build_inception(self.path)
        if module_device(self._network) != torch.device(device):
            self._network.to(device)
        return self._network

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = to_rgb(x, what="Inception features")
        net = self.network(x.device)
        with torch.no_grad():
            (feats,) = net(to_uint8(x))
        return feats.float()


def _build_inception(path) -> torch.nn.Module:
    try:
        from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3
    except ModuleNotFoundError as err:
        raise ModuleNotFoundError(
            "KID/FID need torch-fidelity (the FID Inception network): pip install 'lightning_redd[metrics]' "
            "or pip install torch-fidelity"
        ) from err
    load_state_dict_file(path, what=_WHAT)  # tensors only: makes torch-fidelity's own load safe
    try:
        return FeatureExtractorInceptionV3("inception-v3-compat", ["2048"], feature_extractor_weights_path=str(path))
    except Exception as err:  # torch-fidelity raises RuntimeError on key mismatches
        raise ValueError(
            f"{_WHAT}: {path} does not fit the network ({err}); use {INCEPTION_FILES[0]} from {INCEPTION_SOURCE}"
        ) from err


class InceptionMetrics(DatasetMetric):
    """FID and KID of the images passed to :meth:`update` against a reference set.

    The reference is either ``reference_features`` (e.g. from
    :func:`~lightning_redd.metrics.folder_stats.folder_features`; then ``ref`` is ignored) or the
    ``ref`` images of the same ``update`` calls. ``compute`` returns ``fid``, ``kid`` (mean over
    subsets), ``kid_std``, and the counts ``inception_n_images``/``inception_n_reference``. Needs at least 2 images
    per side; see :mod:`lightning_redd.metrics.distances` for the estimators.

    Args:
        metrics: which of ``("kid", "fid")`` to compute.
        weights: Inception weight file (see the module docstring), used when ``extractor`` is None.
        extractor: a callable ``(B, 3, H, W) in [-1, 1] -> (B, D)``, with a ``dim`` attribute.
        kid_subsets, kid_subset_size, seed: KID's subsets (100 of 1000 images) and their seed.
    """

    names = ("kid", "fid")

    def __init__(
        self,
        *,
        metrics: Sequence[str] = ("kid", "fid"),
        weights: str | os.PathLike | None = None,
        extractor: Callable[[torch.Tensor], torch.Tensor] | None = None,
        reference_features: torch.Tensor | None = None,
        kid_subsets: int = 100,
        kid_subset_size: int = 1000,
        seed: int = 0,
    ) -> None:
        super().__init__()
        unknown = set(metrics) - set(self.names)
        if unknown or not metrics:
            raise ValueError(f"InceptionMetrics computes {self.names}, got {tuple(metrics)}")
        self.metrics = tuple(metrics)
        self.extractor = extractor if extractor is not None else InceptionFeatures(weights)
        self.reference_features = reference_features
        self.kid_subsets, self.kid_subset_size, self.seed = kid_subsets, kid_subset_size, seed
        dim = getattr(self.extractor, "dim", 2048)
        self.add_state("features", (dim,))
        self.add_state("reference", (dim,))

    def update(self, x: torch.Tensor, ref: torch.Tensor | None = None, names: Sequence[str] | None = None) -> None:
        """Add the features of ``x`` (and of ``ref`` when no fixed reference was given)."""
        self.append("features", self.extractor(x))
        if self.reference_features is None:
            if ref is None:
                raise ValueError("InceptionMetrics.update needs ref images, or reference_features= at construction")
            self.append("reference", self.extractor(ref))

    def compute(self, gather: Gather | None = None) -> dict[str, float]:
        states = self.synced_states(gather)
        fake = states["features"].cpu()
        real = (self.reference_features if self.reference_features is not None else states["reference"]).cpu()
        return self.results(fake, real)

    def results(self, fake: torch.Tensor, real: torch.Tensor) -> dict[str, float]:
        """FID/KID (as configured) of feature rows ``fake (N, D)`` against ``real (M, D)``, and the counts."""
        out: dict[str, float] = {"inception_n_images": float(fake.shape[0]), "inception_n_reference": float(real.shape[0])}
        if "fid" in self.metrics:
            out["fid"] = float(frechet_distance(fake, real))
        if "kid" in self.metrics:
            gen = torch.Generator().manual_seed(self.seed)
            mean, std = kernel_inception_distance(
                fake, real, subsets=self.kid_subsets, subset_size=self.kid_subset_size, generator=gen
            )
            out["kid"], out["kid_std"] = float(mean), float(std)
        return out
