"""`PatchAlignedEncoderDecoder`: mmseg's EncoderDecoder for patch-14 backbones at any size.

A ViT sees the image in whole 14-pixel patches. When a side is not a multiple of
14 (the guide's 1280 crops, slide windows, odd photos), this segmentor pads the
input bottom/right to whole patches, runs the model, and crops the logits back,
so every logit lines up with its pixel instead of being stretched over the
image. In training the ground truth is padded with the ignore index alike.

Sliding-window inference (test_cfg mode 'slide') gives the same logits as
mmseg's, but runs `test_cfg.slide_batch` windows per forward pass (one by default,
as mmseg does; the configs batch all four windows of a 1920 px quadrat) and adds
each window's logits in place instead of padding them to the whole image.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from mmengine.structures import PixelData
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

    def slide_windows(self, height: int, width: int) -> list[tuple[int, int, int, int]]:
        """(y1, y2, x1, x2) of each window, placed as mmseg places them."""
        stride_h, stride_w = self.test_cfg.stride
        crop_h, crop_w = self.test_cfg.crop_size
        rows = max(height - crop_h + stride_h - 1, 0) // stride_h + 1
        cols = max(width - crop_w + stride_w - 1, 0) // stride_w + 1
        windows = []
        for row in range(rows):
            for col in range(cols):
                y2, x2 = min(row * stride_h + crop_h, height), min(col * stride_w + crop_w, width)
                windows.append((max(y2 - crop_h, 0), y2, max(x2 - crop_w, 0), x2))
        return windows

    def slide_inference(self, inputs: torch.Tensor, batch_img_metas: list[dict]) -> torch.Tensor:
        batch, _, height, width = inputs.shape
        windows = self.slide_windows(height, width)
        per_pass = max(1, int(self.test_cfg.get("slide_batch", 1)) // batch)
        logits = inputs.new_zeros((batch, self.out_channels, height, width))
        counts = inputs.new_zeros((batch, 1, height, width))
        for start in range(0, len(windows), per_pass):
            group = windows[start : start + per_pass]
            crops = torch.cat([inputs[:, :, y1:y2, x1:x2] for y1, y2, x1, x2 in group])
            # as in mmseg, img_shape (a torch.Size) tells the head the window's size
            metas = [dict(batch_img_metas[0], img_shape=crops.shape[2:])] * len(crops)
            window_logits = self.encode_decode(crops, metas).split(batch)
            for (y1, y2, x1, x2), window_logit in zip(group, window_logits, strict=True):
                logits[:, :, y1:y2, x1:x2] += window_logit
                counts[:, :, y1:y2, x1:x2] += 1
        return logits / counts

    def loss(self, inputs: torch.Tensor, data_samples: list) -> dict:
        pad_h, pad_w = self._padding(inputs)
        if pad_h or pad_w:
            inputs = F.pad(inputs, (0, pad_w, 0, pad_h))
            ignore = self.decode_head.ignore_index
            for sample in data_samples:
                # a new PixelData: mmengine refuses to change the shape of one in place
                label = sample.gt_sem_seg
                sample.gt_sem_seg = PixelData(
                    data=F.pad(label.data, (0, pad_w, 0, pad_h), value=ignore),
                    metainfo=label.metainfo,
                )
        return super().loss(inputs, data_samples)
