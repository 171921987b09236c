"""Pretrained diffusion priors behind one interface."""
