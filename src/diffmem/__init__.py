"""diffmem: diffusion models that create instead of copying, and tools that measure copying."""

__version__ = "0.1.0"
