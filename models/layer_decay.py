"""Layer-wise learning-rate decay for the DINOv2 backbone (what DINOv2 fine-tuning works best with).

Block i of a depth-L ViT learns at lr * rate ** (L - i); the patch embedding and
tokens at lr * rate ** (L + 1); the final norm and the decode head at lr. Norms,
biases and tokens get no weight decay. Enable in a config with:

    optim_wrapper = dict(constructor='LayerDecayOptimWrapperConstructor',
                         paramwise_cfg=dict(layer_decay_rate=0.9))
"""

from __future__ import annotations

import re

from mmengine.optim import DefaultOptimWrapperConstructor
from mmseg.registry import OPTIM_WRAPPER_CONSTRUCTORS
from torch import nn

_EMBEDDING = re.compile(r"^backbone\.vit\.(patch_embed|cls_token|pos_embed|reg_token)")
_BLOCK = re.compile(r"^backbone\.vit\.blocks\.(\d+)\.")


def layer_id(name: str, depth: int) -> int:
    """0 for the embeddings, i + 1 for block i, depth + 1 for everything after the blocks."""
    if _EMBEDDING.match(name):
        return 0
    match = _BLOCK.match(name)
    return int(match.group(1)) + 1 if match else depth + 1


@OPTIM_WRAPPER_CONSTRUCTORS.register_module()
class LayerDecayOptimWrapperConstructor(DefaultOptimWrapperConstructor):
    def add_params(self, params: list[dict], module: nn.Module, **kwargs) -> None:
        rate = float(self.paramwise_cfg.get("layer_decay_rate", 1.0))
        depth = len(module.backbone.vit.blocks)
        for name, param in module.named_parameters():
            if not param.requires_grad:
                continue
            scale = rate ** (depth + 1 - layer_id(name, depth))
            no_decay = param.ndim == 1 or _EMBEDDING.match(name) is not None
            params.append(
                {
                    "params": [param],
                    "lr": self.base_lr * scale,
                    "weight_decay": 0.0 if no_decay else self.base_wd,
                    "param_name": name,
                }
            )
