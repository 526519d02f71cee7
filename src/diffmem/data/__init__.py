"""Data: image sets (folder, zip, npz, built-in digits), seeded subsets, fixed corruptions.

Public API (see each module):
- `ImageDataset`, `load_images(spec, resolution=None, resize=False)`  -- datasets.py
- `split_subset(n_total, n_subset, seed)`                               -- datasets.py
- `to_model_range(images)`, `to_uint8(x)`                              -- datasets.py
- `save_images(images, path)`, `save_grid(images, path, nrow=None)`    -- io.py
- `draw_noisy_copies(x0, sigma_n, seed)`                                -- corruption.py
"""
