"""Pretrained diffusion priors behind one interface (:class:`DiffusionPrior`: ``eps(x_t, t)``).

- :class:`EmbeddedPrior`: the 64x64 prior shipped with the package.
- :class:`ADMPrior`: guided-diffusion (ADM) checkpoints, e.g. the paper's ImageNet/FFHQ 256 models.
- :class:`DiffusersPrior`: a local diffusers ``UNet2DModel`` folder (extra ``[diffusers]``).
- :class:`~lightning_redd.priors.latent_diffusers.DiffusersLatentPrior`: a Stable Diffusion or LDM
  folder as a latent prior (:mod:`lightning_redd.priors.latent`; solvers run on it through
  :class:`~lightning_redd.solvers.latent.LatentSolver`).
- :class:`GaussianPrior`: exact eps for Gaussian data, for tests against closed forms.
"""
from lightning_redd.priors.adm import ADMPrior
from lightning_redd.priors.base import DiffusionPrior
from lightning_redd.priors.diffusers_prior import DiffusersPrior
from lightning_redd.priors.embedded import EmbeddedPrior
from lightning_redd.priors.gaussian import GaussianPrior

__all__ = ["ADMPrior", "DiffusersPrior", "DiffusionPrior", "EmbeddedPrior", "GaussianPrior"]
