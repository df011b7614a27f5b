"""The click predictor of CoralSCoP (or stock SAM), built from segment-anything's modules.

Loading goes through inferencer.load_sam_for_device, the toolkit's one SAM loading path:
the same checkpoint checks, image-encoder runtime (OpenVINO on a CPU where installed) and
precision rules (bf16 only where the device has it) as the automatic detector.

Unlike segment-anything's SamPredictor, which holds one image at a time, the embedding is
a value (FrameEmbedding) that the caller keeps per frame (interactor/cache.py), so clicks
on several frames interleave without re-encoding.
"""

from __future__ import annotations

import threading
from pathlib import Path

import numpy as np
import torch
from segment_anything.modeling import Sam
from segment_anything.utils.transforms import ResizeLongestSide

from .predictor import Decoded, FrameEmbedding
from .prompt import Prompt


class SamClickPredictor:
    """SAM's image encoder per frame and its prompt encoder + mask decoder per click.

    use_category: decode with CoralSCoP's predict_with_category and report each mask's
    coral probability (softmax of the category logits, class 1 = coral, as
    models/sam_lean.coral_probability and the automatic generator read it).
    bf16: as load_sam_for_device decided it. On a GPU the image encoder then runs under
    bf16 autocast; on a CPU the bf16 is inside the encoder (OpenVINO or Bf16ImageEncoder).
    Prompt decoding runs f32 everywhere: it is cheap, and SAM's threshold at 0 on the
    upscaled logits decides the mask's edge.
    """

    def __init__(
        self,
        sam: Sam,
        use_category: bool = True,
        bf16: bool = False,
        encoder_runtime: str = "torch",
    ) -> None:
        self.sam = sam.eval()
        self.use_category = use_category and hasattr(sam.mask_decoder, "predict_with_category")
        self.encoder_runtime = encoder_runtime
        self.bf16 = bf16
        self.device = sam.device
        self.transform = ResizeLongestSide(sam.image_encoder.img_size)
        # One request at a time through the model: CategoryMaskDecoder hands the
        # transformer's outputs to its category head through a forward hook stored on the
        # module, and an OpenVINO compiled model shares one infer request; both would mix
        # two concurrent requests' data.
        self._lock = threading.Lock()

    @classmethod
    def load(
        cls,
        checkpoint: str | Path | None,
        device: str | torch.device | None = None,
        encoder: dict | None = None,
        encoder_runtime: str | None = None,
        bf16: bool | None = None,
    ) -> SamClickPredictor:
        """From a CoralSCoP or stock SAM checkpoint (None: random weights, tests only), set
        up for `device` exactly as the detector's CoralSCoPSegmenter is."""
        from inferencer import load_sam_for_device  # mmseg & co.: only when a model loads

        loaded = load_sam_for_device(checkpoint, device, encoder, encoder_runtime, bf16)
        return cls(loaded.sam, loaded.use_category, loaded.bf16, loaded.encoder_runtime)

    @torch.inference_mode()
    def embed(self, rgb: np.ndarray) -> FrameEmbedding:
        """SAM's ResizeLongestSide, Sam.preprocess (normalise, pad) and image encoder."""
        if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
            raise ValueError(f"expected an (H, W, 3) uint8 RGB frame, got {rgb.dtype} {rgb.shape}")
        resized = self.transform.apply_image(rgb)
        pixels = torch.as_tensor(resized, device=self.device).permute(2, 0, 1)[None]
        gpu_bf16 = self.bf16 and self.device.type != "cpu"
        with self._lock, torch.autocast(self.device.type, torch.bfloat16, enabled=gpu_bf16):
            features = self.sam.image_encoder(self.sam.preprocess(pixels.float()))
        # kept in f32 on the device: the decoder reads it there, and 4 MiB per frame
        return FrameEmbedding(
            features.float().to(self.device), tuple(resized.shape[:2]), tuple(rgb.shape[:2])
        )

    def _prompt_tensors(self, embedding: FrameEmbedding, prompt: Prompt):
        size = embedding.original_size
        points = None
        coords = np.concatenate([prompt.positives, prompt.negatives])
        if len(coords):
            labels = np.r_[np.ones(len(prompt.positives)), np.zeros(len(prompt.negatives))]
            points = (
                torch.as_tensor(self.transform.apply_coords(coords, size), dtype=torch.float,
                                device=self.device)[None],
                torch.as_tensor(labels, dtype=torch.int, device=self.device)[None],
            )  # fmt: skip
        boxes = None
        if prompt.box is not None:
            box = self.transform.apply_boxes(prompt.box[None], size)
            boxes = torch.as_tensor(box, dtype=torch.float, device=self.device)
        return points, boxes

    @torch.inference_mode()
    def decode(self, embedding: FrameEmbedding, prompt: Prompt, multimask: bool) -> Decoded:
        """Prompt encoder (positive clicks label 1, negative 0, the box) and mask decoder,
        masks upscaled to the frame by Sam.postprocess_masks and cut at sam.mask_threshold."""
        sam = self.sam
        points, boxes = self._prompt_tensors(embedding, prompt)
        with self._lock:
            sparse, dense = sam.prompt_encoder(points=points, boxes=boxes, masks=None)
            args = (embedding.features.to(self.device), sam.prompt_encoder.get_dense_pe(),
                    sparse, dense, multimask)  # fmt: skip
            coral = None
            if self.use_category:
                low_res, iou, category = sam.mask_decoder.predict_with_category(*args)
                coral = category[0].float().softmax(-1)[:, 1].cpu().numpy()
            else:
                low_res, iou = sam.mask_decoder(*args)
        logits = sam.postprocess_masks(low_res, embedding.input_size, embedding.original_size)
        masks = (logits[0] > sam.mask_threshold).cpu().numpy()
        return Decoded(masks, iou[0].float().cpu().numpy(), coral)
