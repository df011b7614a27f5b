"""Training and evaluation on mmengine's Runner: safe checkpoints, metrics, hooks.

Importing the package registers CoralSegMetric, the hooks and CoralRunner in
mmseg's registries and routes mmengine's checkpoint loading through
`torch.load(weights_only=True)`.
"""

import models  # noqa: F401  (the mmcv.ops stand-in comes before mmseg's models)
from models import safe_checkpoint

from . import hooks, metrics  # noqa: F401
from .runner import CoralRunner

safe_checkpoint.register()

__all__ = ["CoralRunner"]
