"""Image quality metrics with explicit conventions: inputs ``(B, C, H, W)`` in ``[-1, 1]``.

Per-image: :func:`psnr`, :func:`ssim`, :class:`LPIPS`. Dataset-level: :class:`InceptionMetrics`
(KID, FID), :class:`TopKAccuracy` (top-1/top-5). :class:`MetricSuite` builds them by name;
:func:`evaluate_folders` scores two folders. Learned metrics read local weight files only
(:mod:`lightning_redd.metrics.weights`). The heavier modules are imported on first use.
"""
from lightning_redd.metrics.image import psnr, ssim

__all__ = [
    "psnr", "ssim", "LPIPS", "InceptionFeatures", "InceptionMetrics", "TopKAccuracy", "MetricSuite",
    "METRICS", "PER_IMAGE_METRICS", "DATASET_METRICS", "folder_features", "evaluate_folders", "Evaluation",
]

_LAZY = {
    "LPIPS": "lpips", "InceptionFeatures": "inception", "InceptionMetrics": "inception",
    "TopKAccuracy": "classifier", "MetricSuite": "registry", "METRICS": "registry",
    "PER_IMAGE_METRICS": "registry", "DATASET_METRICS": "registry", "folder_features": "folder_stats",
    "evaluate_folders": "evaluate", "Evaluation": "evaluate",
}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f"lightning_redd.metrics.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'lightning_redd.metrics' has no attribute {name!r}")
