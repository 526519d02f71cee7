"""The bottom layer: helpers every other layer may use (atomic writes, flag parsing).

Imports nothing from diffmem except `diffmem.errors` (docs/architecture.md)."""
