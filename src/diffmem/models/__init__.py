"""Backbones only (no preconditioning inside): see unet.py."""
