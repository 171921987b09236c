"""lightning_redd: image inverse problems solved by RED-diff with pretrained diffusion priors."""

__version__ = "0.1.0"
