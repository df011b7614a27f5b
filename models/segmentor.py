"""`PatchAlignedEncoderDecoder`: mmseg's EncoderDecoder for patch-14 backbones at any size.

A ViT sees the image in whole 14-pixel patches. When a side is not a multiple of
14 (the guide's 1280 crops, slide windows, odd photos), this segmentor pads the
input bottom/right to whole patches, runs the model, and crops the logits back,
so every logit lines up with its pixel instead of being stretched over the
image. In training the ground truth is padded with the ignore index alike.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmseg.models.segmentors import EncoderDecoder
from mmseg.registry import MODELS


@MODELS.register_module()
class PatchAlignedEncoderDecoder(EncoderDecoder):
    def __init__(self, *args, patch_size: int = 14, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.patch_size = patch_size

    def _padding(self, inputs: torch.Tensor) -> tuple[int, int]:
        height, width = inputs.shape[-2:]
        return (-height) % self.patch_size, (-width) % self.patch_size

    def encode_decode(self, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        pad_h, pad_w = self._padding(inputs)
        if not (pad_h or pad_w):
            return super().encode_decode(inputs, batch_img_metas)
        height, width = inputs.shape[-2:]
        padded = F.pad(inputs, (0, pad_w, 0, pad_h))
        shape = tuple(padded.shape[-2:])
        # the decode head resizes its logits to pad_shape (else img_shape): the padded size
        metas = [dict(meta, img_shape=shape, pad_shape=shape) for meta in batch_img_metas]
        return super().encode_decode(padded, metas)[..., :height, :width]

    def loss(self, inputs: torch.Tensor, data_samples: list) -> dict:
        pad_h, pad_w = self._padding(inputs)
        if pad_h or pad_w:
            inputs = F.pad(inputs, (0, pad_w, 0, pad_h))
            ignore = self.decode_head.ignore_index
            for sample in data_samples:
                sample.gt_sem_seg.data = F.pad(
                    sample.gt_sem_seg.data, (0, pad_w, 0, pad_h), value=ignore
                )
        return super().loss(inputs, data_samples)
