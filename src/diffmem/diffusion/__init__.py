"""Diffusion math: EDM preconditioning, the losses (Algorithm 1), samplers."""
