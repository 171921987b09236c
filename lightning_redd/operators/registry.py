"""Every operator by task name: ``OPERATORS[name](**kwargs)`` builds a representative instance
(the paper's setting where it has one); ``build_operator`` adds a clear unknown-name error."""
from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Literal

from lightning_redd.operators.base import ForwardOperator
from lightning_redd.operators.blur import GaussianBlur, MotionBlur, UniformBlur
from lightning_redd.operators.colorization import Colorization
from lightning_redd.operators.composed import Composed
from lightning_redd.operators.compressed_sensing import CompressedSensing
from lightning_redd.operators.denoising import Denoising
from lightning_redd.operators.hdr import HDR
from lightning_redd.operators.inpainting import Inpainting
from lightning_redd.operators.jpeg import JPEG
from lightning_redd.operators.nonlinear_blur import NonlinearBlur
from lightning_redd.operators.phase_retrieval import PhaseRetrieval
from lightning_redd.operators.quantization import Quantization
from lightning_redd.operators.super_resolution import BicubicSR, BlockAverageSR


def sr_then_inpainting(*, factor: int = 4, drop_fraction: float = 0.5, sigma_y: float = 0.0, channels: int = 3) -> Composed:
    """Block-average SR, then random-pixel inpainting of the low-res image (exact chained pinv)."""
    parts = [BlockAverageSR(factor=factor, channels=channels), Inpainting(mask="random", drop_fraction=drop_fraction, channels=channels)]
    return Composed(operators=parts, pinv_mode="chain", sigma_y=sigma_y, channels=channels)


def inpainting_then_sr(
    *, factor: int = 4, drop_fraction: float = 0.5, pinv_mode: Literal["chain", "cg"] = "cg", sigma_y: float = 0.0, channels: int = 3
) -> Composed:
    """Random-pixel inpainting, then block-average SR (pseudo-inverse by CGLS)."""
    parts = [Inpainting(mask="random", drop_fraction=drop_fraction, channels=channels), BlockAverageSR(factor=factor, channels=channels)]
    return Composed(operators=parts, pinv_mode=pinv_mode, sigma_y=sigma_y, channels=channels)


OPERATORS: dict[str, Callable[..., ForwardOperator]] = {
    "denoising": Denoising,
    "denoising_poisson": partial(Denoising, noise="poisson"),
    "inpainting_box": partial(Inpainting, mask="box"),
    "inpainting_random": partial(Inpainting, mask="random", drop_fraction=0.7),
    "inpainting_strokes": partial(Inpainting, mask="strokes", coverage=(0.1, 0.2)),
    "inpainting_half": partial(Inpainting, mask="half"),
    "sr_block": partial(BlockAverageSR, factor=4),
    "sr_bicubic": partial(BicubicSR, factor=4),
    "deblur_gaussian": partial(GaussianBlur, kernel_size=61, sigma=3.0),
    "deblur_anisotropic": partial(GaussianBlur, kernel_size=61, sigma=(4.0, 1.5), angle=30.0),
    "deblur_uniform": partial(UniformBlur, kernel_size=9),
    "deblur_motion": partial(MotionBlur, kernel_size=61, intensity=0.5),
    "colorization": Colorization,
    "compressed_sensing": partial(CompressedSensing, ratio=0.25),
    "sr_inpainting": sr_then_inpainting,
    "inpainting_sr": inpainting_then_sr,
    "phase_retrieval": partial(PhaseRetrieval, pad_ratio=0.25),
    "hdr": partial(HDR, gain=2.0),
    "jpeg": partial(JPEG, quality=10),
    "quantization": partial(Quantization, bits=3),
    "nonlinear_blur": partial(NonlinearBlur, kernel_size=31, intensity=0.5),
}


def build_operator(name: str, **kwargs) -> ForwardOperator:
    """``OPERATORS[name](**kwargs)``; ``kwargs`` override the registry's defaults."""
    if name not in OPERATORS:
        raise ValueError(f"unknown operator {name!r}; known operators: {', '.join(sorted(OPERATORS))}")
    return OPERATORS[name](**kwargs)


#: Settings that let an entry run on tiny images (16 x 16, 24 x 40 and 21 x 35 px: the property
#: tests), as overrides of the entry's defaults; an entry whose defaults fit needs none.
SMALL_IMAGE_SETTINGS: dict[str, dict] = {
    "sr_bicubic": {"factor": 2},
    "sr_inpainting": {"factor": 2},
    "inpainting_sr": {"factor": 2},
    "deblur_gaussian": {"kernel_size": 5, "sigma": 1.0, "pinv_rtol": 1e-5},
    "deblur_anisotropic": {"kernel_size": 7, "sigma": (1.5, 0.7), "pinv_rtol": 1e-5},
    "deblur_uniform": {"kernel_size": 3},
    "deblur_motion": {"kernel_size": 9},
    "jpeg": {"quality": 50},
    "nonlinear_blur": {"kernel_size": 7},
}


def build_small(name: str, **kwargs) -> ForwardOperator:
    """``build_operator(name)`` with :data:`SMALL_IMAGE_SETTINGS` (then ``kwargs``) applied."""
    return build_operator(name, **{**SMALL_IMAGE_SETTINGS.get(name, {}), **kwargs})
