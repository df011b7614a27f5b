"""A semantic checkpoint with random weights, saved the way train.py saves one.

For pipeline checks only (tests and benchmarks): no trained weights exist on the
machines that run them. The file holds `state_dict` and `meta.dataset_meta`
(classes, palette), which is all `inferencer.SemanticSegmenter` reads.
"""

from __future__ import annotations

from pathlib import Path

import torch


def write_random_semantic_checkpoint(config: str | Path, path: str | Path, seed: int = 0) -> Path:
    """Build the config's model with seed `seed` and save it to `path` (atomically)."""
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmseg.registry import MODELS

    init_default_scope("mmseg")
    cfg = Config.fromfile(str(config), import_custom_modules=False)
    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    meta = {"dataset_meta": {key: cfg.dataset_info[key] for key in ("classes", "palette")}}
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.partial")
    torch.save({"state_dict": model.state_dict(), "meta": meta}, temporary)
    temporary.replace(path)
    return path
