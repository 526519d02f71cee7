"""Text-to-image (Shah et al. 2025, Sec. 5.2 and Table 3): Stable Diffusion fine-tuning through diffusers.

- `data`         captioned image folders (metadata.jsonl or .txt captions)
- `components`   loading Stable Diffusion's parts from a hub id or a local pipeline folder
- `losses`       the variance-preserving ambient loss in latent space (one screen)
- `mitigations`  S23 caption / embedding corruptions, W24 score, filter and prompt optimisation
- `config`       the run configuration; `rundir` the run directory and checkpoints
- `train`        the fine-tuning loop (accelerate: devices, mixed precision, accumulation)
- `sample`       generation with per-sample seeds and W24 detection scores
- `audit`        Table 3: similarity to the training set, CLIP score, Frechet distance

Nothing is imported here, so `import diffmem.t2i.losses` stays light.
"""
