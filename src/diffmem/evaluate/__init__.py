"""Evaluation: feature extractors, nearest neighbours, memorization audits, FD/FID/KID, pictures, reports.

Public API (see each module; importing this package loads no model library):
- `FeatureExtractor`, `get_extractor(name, device)`, `embed_dataset(extractor, data, cache_dir)`  -- features.py
  (DINOv2/CLIP in hub.py, FID Inception-v3 in inception.py, `digits-net` in digits_net.py)
- `nearest_neighbours(queries, refs, k)`                                 -- neighbours.py
- `memorization_report(sample_feats, train_feats, heldout_feats)`        -- memorization.py
- `feature_statistics`, `frechet_distance`, `kid`, `precision_recall`    -- quality.py
- `run_audit(...)` (report.json, nearest.npz, histogram.png, neighbours.png) -- audit.py
- `run_fid(...)`, `quality_report`, `save_statistics`, `load_statistics`  -- fid.py
- `similarity_histogram`, `neighbours_picture`                           -- pictures.py
- `write_report(out_dir, rows, pictures, title)`, `audit_row`, `heldout_row` -- report.py
- feature cache location: `$DIFFMEM_CACHE` or `~/.cache/diffmem`          -- cache.py
"""
