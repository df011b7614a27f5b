"""DINOv2 ViT backbone for MMSegmentation, built on timm's VisionTransformer.

timm gives what the guide's mmseg `VisionTransformer` lacks: attention through
fused scaled-dot-product kernels, gradient checkpointing, and position
embeddings resampled for any input size. The backbone returns the blocks at
`out_indices` as NCHW maps (stride 14), each through the final LayerNorm, as
DINOv2's `get_intermediate_layers(norm=True)` does.

Inputs whose sides are not multiples of 14 are padded (bottom/right) by timm's
patch embedding. In configs the data preprocessor pads to a multiple of 14
(`size_divisor=14`, also in its `test_cfg`) and mmseg crops the prediction back
to the image, so the features line up with the pixels exactly.
"""

from __future__ import annotations

from collections.abc import Sequence

import timm
import torch
from mmengine.model import BaseModule
from mmseg.registry import MODELS
from timm.models.vision_transformer import VisionTransformer

from .dinov2_checkpoint import load_into, read_state_dict

PATCH_SIZE = 14
# DINOv2 was trained at 518 px: 37x37 position embeddings, as every checkpoint stores them.
PRETRAIN_IMG_SIZE = 518
ARCHS = {
    "vits14": "vit_small_patch14_dinov2",
    "vitb14": "vit_base_patch14_dinov2",
    "vitl14": "vit_large_patch14_dinov2",
    "vitg14": "vit_giant_patch14_dinov2",
}


def build_vit(arch: str | dict, drop_path_rate: float = 0.0) -> VisionTransformer:
    """A timm DINOv2 ViT by name (vits14 ... vitg14), or a custom size given as a dict
    (embed_dim, depth, num_heads: small models for tests and the CPU demo)."""
    common = dict(
        img_size=PRETRAIN_IMG_SIZE,
        num_classes=0,
        global_pool="",
        dynamic_img_size=True,
        dynamic_img_pad=True,
        drop_path_rate=drop_path_rate,
    )
    if isinstance(arch, str):
        if arch not in ARCHS:
            raise ValueError(f"Unknown DINOv2 arch {arch!r}; choose one of {sorted(ARCHS)}")
        return timm.create_model(ARCHS[arch], pretrained=False, **common)
    return VisionTransformer(patch_size=PATCH_SIZE, init_values=1e-5, **common, **dict(arch))


@MODELS.register_module(name="DINOv2")
class DINOv2(BaseModule):
    """DINOv2 ViT/14 backbone.

    Args:
        arch: 'vits14', 'vitb14', 'vitl14', 'vitg14', or dict(embed_dim, depth, num_heads).
        out_indices: blocks whose outputs are returned (negative counts from the end).
        frozen_stages: -1 trains everything; N freezes the patch embedding and the
            first N blocks and keeps them in eval mode.
        drop_path_rate: stochastic depth, increasing linearly over the blocks.
        use_checkpoint: gradient checkpointing (memory for compute).
        pretrained: None, a weights file, a Hugging Face folder or a hub id
            (Meta, Hugging Face and timm layouts are converted); loaded in init_weights().
    """

    def __init__(
        self,
        arch: str | dict = "vitb14",
        out_indices: Sequence[int] = (2, 5, 8, 11),
        frozen_stages: int = -1,
        drop_path_rate: float = 0.0,
        use_checkpoint: bool = False,
        pretrained: str | None = None,
        init_cfg: dict | None = None,
    ) -> None:
        super().__init__(init_cfg)
        self.vit = build_vit(arch, drop_path_rate)
        depth = len(self.vit.blocks)
        self.out_indices = [i % depth if -depth <= i < depth else None for i in out_indices]
        if None in self.out_indices:
            raise ValueError(f"out_indices {list(out_indices)} out of range for {depth} blocks")
        if frozen_stages > depth:
            raise ValueError(f"frozen_stages={frozen_stages} but the model has {depth} blocks")
        self.frozen_stages = frozen_stages
        self.pretrained = pretrained
        self.embed_dim = self.vit.embed_dim
        self.vit.set_grad_checkpointing(use_checkpoint)
        self._freeze_stages()

    def init_weights(self) -> None:
        super().init_weights()
        if self.pretrained:
            load_into(self.vit, read_state_dict(self.pretrained), str(self.pretrained))

    def _frozen_modules(self) -> list[torch.nn.Module]:
        if self.frozen_stages < 0:
            return []
        return [self.vit.patch_embed, *self.vit.blocks[: self.frozen_stages]]

    def _freeze_stages(self) -> None:
        if self.frozen_stages < 0:
            return
        self.vit.cls_token.requires_grad_(False)
        self.vit.pos_embed.requires_grad_(False)
        for module in self._frozen_modules():
            module.eval()
            module.requires_grad_(False)

    def train(self, mode: bool = True) -> DINOv2:
        super().train(mode)
        for module in self._frozen_modules():  # stay in eval: no dropout / drop path
            module.eval()
        return self

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        features = self.vit.forward_intermediates(
            x, indices=self.out_indices, norm=True, output_fmt="NCHW", intermediates_only=True
        )
        return tuple(features)
