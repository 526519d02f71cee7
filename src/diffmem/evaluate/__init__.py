"""Evaluation: feature extractors, nearest neighbours, memorization audits, FD/FID/KID, pictures.

Public API (see each module; importing this package loads no model library):
- `FeatureExtractor`, `get_extractor(name, device)`, `embed_dataset(extractor, data, cache_dir)`  -- features.py
  (DINOv2/CLIP in hub.py, FID Inception-v3 in inception.py, `digits-net` in digits_net.py)
- `nearest_neighbours(queries, refs, k)`                                 -- search.py
- `memorization_report(sample_feats, train_feats, heldout_feats)`        -- memorization.py
- `feature_statistics`, `frechet_distance`, `kid`, `precision_recall`    -- quality.py
- `run_audit(...)`, `compute_audit`, `write_audit` (report.json, nearest.csv/.npz, pictures; the report.html/.md
  of `diffmem.report.audit` when given as `report`) -- audit.py
- `run_fid(...)`, `quality_report`, `save_statistics`, `load_statistics`  -- fid.py
- `similarity_chart`, `marked_grid`, `neighbours_picture`                -- pictures.py
- feature cache location: `$DIFFMEM_CACHE` or `~/.cache/diffmem`          -- cache.py
"""

from typing import Any

_EXPORTS = {
    "FeatureExtractor": "features", "get_extractor": "features", "embed_dataset": "features",
    "nearest_neighbours": "search", "memorization_report": "memorization",
    "feature_statistics": "quality", "frechet_distance": "quality", "kid": "quality", "precision_recall": "quality",
    "run_audit": "audit", "compute_audit": "audit", "write_audit": "audit", "run_fid": "fid",
    "quality_report": "fid", "save_statistics": "fid", "load_statistics": "fid",
    "similarity_chart": "pictures", "marked_grid": "pictures", "neighbours_picture": "pictures",
}
__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    """`from diffmem.evaluate import run_audit` (modules load on first use)."""
    if name in _EXPORTS:
        import importlib

        return getattr(importlib.import_module(f"diffmem.evaluate.{_EXPORTS[name]}"), name)
    raise AttributeError(f"module 'diffmem.evaluate' has no attribute '{name}'")
