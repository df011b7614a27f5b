"""Two-stage inference, reusable: semantic segmentation, CoralSCoP instances, fusion.

    inferencer = TwoStageInferencer("best_segformer_config.py", "best_segformer.pth",
                                    "vit_b_coralscop.pth", device="cuda:0")
    result = inferencer(image_rgb)        # result.instances, result.class_map

The batch command (inference_with_coralscop.py) and the CVAT function
(nuclio/main.py) both use these classes; nothing here reads the command line.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import cv2
import numpy as np
import torch

import models  # noqa: F401  (registers DINOv2 & co. and the mmcv.ops stand-in before mmseg)
from models.coralscop import load_coralscop
from models.fusion import FusionSettings, Instance, fuse
from models.mask_generator import CoralMaskGenerator, GeneratorSettings, Proposals
from models.safe_checkpoint import safe_load
from models.sam_openvino import choose_runtime, compile_image_encoder

log = logging.getLogger("inferencer")


def default_device() -> str:
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _bf16_supported(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def _autocast(device: torch.device, enabled: bool | None = None):
    """bf16 autocast; by default on GPUs that support it, plain fp32 elsewhere."""
    if enabled is None:
        enabled = _bf16_supported(device)
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled)


def _test_scale(cfg) -> tuple[int, int] | None:
    for step in cfg.get("test_pipeline", []):
        if step.get("type") == "Resize" and step.get("keep_ratio") and step.get("scale"):
            return tuple(step["scale"])
    return None


class SemanticSegmenter:
    """An MMSegmentation model from a config and a checkpoint (loaded with weights_only=True).

    bf16: run the model under bf16 autocast (default: where the GPU supports it).
    """

    def __init__(
        self, config: str, checkpoint: str, device: str | None = None, bf16: bool | None = None
    ) -> None:
        from mmengine.config import Config
        from mmengine.registry import init_default_scope
        from mmseg.registry import MODELS

        # the model's modules are imported above; the config's custom_imports also name
        # training-only ones that a deployed function does not ship
        cfg = Config.fromfile(config, import_custom_modules=False)
        init_default_scope("mmseg")
        self.device = torch.device(device or default_device())
        self.bf16 = _bf16_supported(self.device) if bf16 is None else bf16
        self.model = MODELS.build(cfg.model)
        state = safe_load(checkpoint)
        weights = state.get("state_dict", state)
        try:
            self.model.load_state_dict(weights, strict=True)
        except RuntimeError as exc:
            raise ValueError(f"{checkpoint} does not fit the model of {config}: {exc}") from None
        meta = state.get("meta", {}).get("dataset_meta") or {}
        info = cfg.get("dataset_info", {})
        self.classes = list(meta.get("classes") or info.get("classes"))
        self.palette = [list(c) for c in (meta.get("palette") or info.get("palette"))]
        self.scale = _test_scale(cfg)
        self.model.to(self.device).eval()

    def _resized(self, image: np.ndarray) -> np.ndarray:
        if not self.scale:
            return image
        height, width = image.shape[:2]
        factor = min(max(self.scale) / max(height, width), min(self.scale) / min(height, width))
        size = (round(width * factor), round(height * factor))
        if size == (width, height):
            return image
        return cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)

    @torch.inference_mode()
    def predict_probs(self, image_rgb: np.ndarray) -> torch.Tensor:
        """(C, H, W) class probabilities at the image's size, on the device."""
        from mmseg.structures import SegDataSample

        height, width = image_rgb.shape[:2]
        resized = self._resized(image_rgb)
        # The data preprocessor expects BGR (as mmcv loads images) and converts to RGB.
        # The image goes to the device as it is and is reordered there: flipping the
        # channels of a 1920 px image on the host took ~30 ms, a third of the GPU call.
        pixels = torch.from_numpy(np.ascontiguousarray(resized)).to(self.device)
        tensor = pixels.permute(2, 0, 1).flip(0)
        meta = dict(
            ori_shape=(height, width), img_shape=resized.shape[:2], pad_shape=resized.shape[:2]
        )
        sample = SegDataSample(metainfo=meta)
        data = self.model.data_preprocessor(dict(inputs=[tensor], data_samples=[sample]), False)
        with _autocast(self.device, self.bf16):
            result = self.model.predict(data["inputs"], data["data_samples"])[0]
        return result.seg_logits.data.float().softmax(0)


class CoralSCoPSegmenter:
    """CoralSCoP (or stock SAM) proposals, fused with semantic probabilities.

    encoder_runtime: the image encoder's runtime, 'auto' (OpenVINO on a CPU where it is
    installed, PyTorch otherwise), 'openvino' or 'torch'; None reads
    CORAL_SAM_ENCODER_RUNTIME (models/sam_openvino.py). On a GPU nothing changes.
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        device: str | None = None,
        settings: GeneratorSettings | None = None,
        encoder: dict | None = None,
        encoder_runtime: str | None = None,
    ) -> None:
        self.device = torch.device(device or default_device())
        sam, use_category = load_coralscop(checkpoint, encoder)
        self.encoder_runtime = choose_runtime(encoder_runtime, self.device)
        if self.encoder_runtime == "openvino":
            sam.image_encoder = compile_image_encoder(sam.image_encoder)
        self.generator = CoralMaskGenerator(sam.to(self.device), use_category, settings)

    def propose(self, image_rgb: np.ndarray) -> Proposals:
        with _autocast(self.device):
            return self.generator.generate(image_rgb)

    def segment_instances(
        self,
        image: np.ndarray,
        semantic: np.ndarray | torch.Tensor,
        score_threshold: float | None = None,
        nms_threshold: float = 0.5,
        min_area: int = 100,
        min_threshold: float = 0.05,
        unsure_threshold: float = 0.2,
    ) -> list[Instance]:
        """Instances of an RGB image, labelled by the semantic result.

        semantic: (C, H, W) class probabilities, or an (H, W) class map (taken as
        certain). score_threshold: SAM's predicted-IoU threshold for this call
        (lower gives more instances); nms_threshold: mask IoU above which the less
        confident of two instances goes; min_area: smallest instance in pixels.
        """
        probs = torch.as_tensor(semantic, device=self.device)
        if probs.ndim == 2:
            probs = torch.nn.functional.one_hot(probs.long(), num_classes=int(probs.max()) + 1)
            probs = probs.permute(2, 0, 1).float()
        settings = self.generator.settings
        previous = settings.pred_iou_thresh
        if score_threshold is not None:
            settings.pred_iou_thresh = score_threshold
        try:
            proposals = self.propose(image)
        finally:
            settings.pred_iou_thresh = previous
        fusion = FusionSettings(min_threshold, unsure_threshold, nms_threshold, min_area)
        return fuse(probs.float(), proposals.masks, fusion)


@dataclass
class InferenceResult:
    instances: list[Instance]
    class_map: np.ndarray  # (H, W) uint8, the semantic prediction
    seconds: dict = field(default_factory=dict)


class TwoStageInferencer:
    """Semantic segmentation, then CoralSCoP proposals fused with it (see models/fusion.py)."""

    def __init__(
        self,
        segformer_config: str,
        segformer_weights: str,
        sam_checkpoint: str | None = None,
        device: str | None = None,
        fusion: FusionSettings | None = None,
        generator: GeneratorSettings | None = None,
        sam_encoder: dict | None = None,
    ) -> None:
        device = device or default_device()
        self.semantic = SemanticSegmenter(segformer_config, segformer_weights, device)
        self.instances = CoralSCoPSegmenter(sam_checkpoint, device, generator, sam_encoder)
        self.fusion = fusion or FusionSettings()
        self.classes, self.palette = self.semantic.classes, self.semantic.palette

    def __call__(self, image_rgb: np.ndarray) -> InferenceResult:
        started = time.perf_counter()
        probs = self.semantic.predict_probs(image_rgb)
        semantic_done = time.perf_counter()
        proposals = self.instances.propose(image_rgb)
        sam_done = time.perf_counter()
        instances = fuse(probs, proposals.masks, self.fusion)
        class_map = probs.argmax(0).to(torch.uint8).cpu().numpy()
        finished = time.perf_counter()
        seconds = {"semantic": semantic_done - started, "sam": sam_done - semantic_done,
                   "fusion": finished - sam_done, "total": finished - started}  # fmt: skip
        return InferenceResult(instances, class_map, seconds)
