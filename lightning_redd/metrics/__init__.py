"""Image quality metrics."""
from lightning_redd.metrics.image import psnr, ssim

__all__ = ["psnr", "ssim"]
