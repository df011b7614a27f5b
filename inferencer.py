"""Two-stage inference, reusable: semantic segmentation, CoralSCoP instances, fusion.

    inferencer = TwoStageInferencer("best_segformer_config.py", "best_segformer.pth",
                                    "vit_b_coralscop.pth", device="cuda:0")
    result = inferencer(image_rgb)        # result.instances, result.class_map

The batch command (inference_with_coralscop.py) and the CVAT function
(nuclio/main.py) both use these classes; nothing here reads the command line.

Precision: GPUs run both stages under bf16 autocast where they support it. CPUs run f32
unless bf16 is asked for (cpu_precision, or CORAL_CPU_PRECISION; models/cpu_precision.py),
and only where the CPU has native bf16: then the semantic model runs under CPU bf16
autocast and SAM's image encoder in bf16 (OpenVINO's, or PyTorch's under autocast).
Probabilities, prompt decoding and fusion stay f32 everywhere.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import cv2
import numpy as np
import torch

import models  # noqa: F401  (registers DINOv2 & co. and the mmcv.ops stand-in before mmseg)
from models.coralscop import Bf16ImageEncoder, load_coralscop
from models.cpu_precision import choose_cpu_precision
from models.fusion import FusionSettings, Instance, fuse
from models.mask_generator import CoralMaskGenerator, GeneratorSettings, Proposals
from models.safe_checkpoint import safe_load
from models.sam_openvino import choose_runtime, compile_image_encoder

if TYPE_CHECKING:
    from segment_anything.modeling import Sam

log = logging.getLogger("inferencer")


def default_device() -> str:
    return "cuda:0" if torch.cuda.is_available() else "cpu"


def _bf16_supported(device: torch.device) -> bool:
    return device.type == "cuda" and torch.cuda.is_bf16_supported()


def _wants_bf16(device: torch.device, bf16: bool | None) -> bool:
    """Whether a stage on `device` runs in bf16. None: where the GPU supports it; on a CPU,
    as CORAL_CPU_PRECISION says (default f32). On a CPU, bf16 only where it is native (else
    f32, with a warning from choose_cpu_precision)."""
    if device.type != "cpu":
        return _bf16_supported(device) if bf16 is None else bf16
    if bf16 is False:
        return False
    return choose_cpu_precision(None if bf16 is None else "bf16").used == "bf16"


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

    bf16: run the model under bf16 autocast (default: where the GPU supports it; on a CPU,
    CORAL_CPU_PRECISION, f32 unless it says bf16); on a CPU only where bf16 is native.
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
        self.bf16 = _wants_bf16(self.device, bf16)
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


class LoadedSam(NamedTuple):
    """A (CoralSCoP-)SAM ready for one device, as load_sam_for_device leaves it."""

    sam: Sam  # on the device, in eval mode; its image encoder possibly replaced (see below)
    use_category: bool  # the checkpoint has CoralSCoP's coral/background head
    encoder_runtime: str  # 'openvino' or 'torch'
    bf16: bool  # the image encoder runs in bf16 (on a GPU: under bf16 autocast)


def load_sam_for_device(
    checkpoint: str | Path | None,
    device: str | torch.device | None = None,
    encoder: dict | None = None,
    encoder_runtime: str | None = None,
    bf16: bool | None = None,
) -> LoadedSam:
    """Load CoralSCoP (or stock SAM) weights and set its image encoder up for `device`.

    The one loading path of the toolkit's SAM users (the automatic generator below, the
    CVAT click interactor in interactor/), so a runtime or precision rule changes for
    all of them at once. checkpoint None: random weights (tests and demos, with a
    warning). encoder: the image encoder's size (models.coralscop.SAM_VIT_B by default).
    encoder_runtime: 'auto', 'openvino' (CPU only) or 'torch'; None reads
    CORAL_SAM_ENCODER_RUNTIME. bf16: None decides as _wants_bf16 does. On a CPU only
    the image encoder runs in bf16 (OpenVINO compiled for bf16, or PyTorch under CPU
    autocast with an f32 result); prompt decoding stays f32. On a GPU the caller runs
    under _autocast(device, bf16) where it wants bf16.
    """
    device = torch.device(device or default_device())
    bf16 = _wants_bf16(device, bf16)
    sam, use_category = load_coralscop(checkpoint, encoder)
    runtime = choose_runtime(encoder_runtime, device)
    if runtime == "openvino":
        precision = "bf16" if bf16 else "f32"
        sam.image_encoder = compile_image_encoder(sam.image_encoder, precision=precision)
    elif bf16 and device.type == "cpu":
        sam.image_encoder = Bf16ImageEncoder(sam.image_encoder)
    return LoadedSam(sam.to(device), use_category, runtime, bf16)


class CoralSCoPSegmenter:
    """CoralSCoP (or stock SAM) proposals, fused with semantic probabilities.

    encoder_runtime: the image encoder's runtime, 'auto' (OpenVINO on a CPU where it is
    installed, PyTorch otherwise), 'openvino' or 'torch'; None reads
    CORAL_SAM_ENCODER_RUNTIME (models/sam_openvino.py). On a GPU nothing changes.
    bf16: as SemanticSegmenter's. On a GPU the whole generator runs under bf16 autocast; on
    a CPU only the image encoder runs in bf16 (OpenVINO compiled for bf16, or PyTorch under
    CPU autocast), prompt decoding stays f32.
    """

    def __init__(
        self,
        checkpoint: str | None = None,
        device: str | None = None,
        settings: GeneratorSettings | None = None,
        encoder: dict | None = None,
        encoder_runtime: str | None = None,
        bf16: bool | None = None,
    ) -> None:
        self.device = torch.device(device or default_device())
        loaded = load_sam_for_device(checkpoint, self.device, encoder, encoder_runtime, bf16)
        self.bf16, self.encoder_runtime = loaded.bf16, loaded.encoder_runtime
        # a CPU decodes prompts in f32 whatever the encoder's precision, as with OpenVINO
        self._generator_bf16 = self.bf16 and self.device.type != "cpu"
        self.generator = CoralMaskGenerator(loaded.sam, loaded.use_category, settings)

    def propose(self, image_rgb: np.ndarray) -> Proposals:
        with _autocast(self.device, self._generator_bf16):
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
        cpu_precision: str | None = None,
    ) -> None:
        """cpu_precision: 'f32' or 'bf16' for both stages on a CPU (None: CORAL_CPU_PRECISION,
        default f32); bf16 where the CPU lacks it runs f32 with a warning. GPUs ignore it."""
        device = torch.device(device or default_device())
        bf16, self.cpu_precision = None, None  # a GPU's default
        if device.type == "cpu":
            # decided once here: one warning, and both stages in the same precision
            self.cpu_precision = choose_cpu_precision(cpu_precision, "cpu_precision")
            bf16 = self.cpu_precision.used == "bf16"
            log.info("CPU precision: %s (semantic model and SAM image encoder)",
                     self.cpu_precision.used)  # fmt: skip
        self.semantic = SemanticSegmenter(segformer_config, segformer_weights, str(device), bf16)
        self.instances = CoralSCoPSegmenter(
            sam_checkpoint, str(device), generator, sam_encoder, bf16=bf16
        )
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
