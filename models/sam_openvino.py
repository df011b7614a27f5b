"""SAM's image encoder through OpenVINO on a CPU (optional: `pip install openvino`).

Automatic mask generation at CoralSCoP's settings runs the ViT-B image encoder five
times per 1920 px quadrat (the image and four crops, each at 1024 px): on a CPU that
is about half of the time once prompt decoding is lean (models/sam_lean.py). OpenVINO,
the runtime of CVAT's own CPU functions, runs the same graph in fp32 faster than
PyTorch on the project's 2-core machines (bench/RESULTS.md). The encoder is exported
to ONNX once (TorchScript-based exporter, no extra package) and read by OpenVINO;
the compiled model is kept in a cache folder keyed by a hash of the weights, so a
restarted function does not export again.

Without OpenVINO, or on a GPU, the PyTorch encoder runs as before.
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

RUNTIME_VARIABLE = "CORAL_SAM_ENCODER_RUNTIME"  # auto | openvino | torch
CACHE_VARIABLE = "CORAL_CACHE_DIR"


def openvino_available() -> bool:
    try:
        import openvino  # noqa: F401
    except ImportError:
        return False
    return True


def choose_runtime(requested: str | None, device: torch.device) -> str:
    """'openvino' or 'torch' for the SAM image encoder.

    requested: 'auto' (OpenVINO on a CPU where it is installed), 'openvino' (an error
    where it cannot run) or 'torch'; None reads CORAL_SAM_ENCODER_RUNTIME (default auto)."""
    requested = (requested or os.environ.get(RUNTIME_VARIABLE) or "auto").strip().lower()
    if requested not in ("auto", "openvino", "torch"):
        raise ValueError(f"{RUNTIME_VARIABLE}={requested!r}: use auto, openvino or torch")
    if requested == "torch" or device.type != "cpu":
        if requested == "openvino":
            raise ValueError(f"the OpenVINO encoder runs on a CPU only, not on {device}")
        return "torch"
    if openvino_available():
        return "openvino"
    if requested == "openvino":
        raise ValueError(f"{RUNTIME_VARIABLE}=openvino, but the openvino package is not installed")
    return "torch"


def default_cache_dir() -> Path:
    root = os.environ.get(CACHE_VARIABLE) or Path.home() / ".cache" / "coral-toolkit"
    return Path(root) / "openvino"


def weights_key(module: nn.Module) -> str:
    """A hash of a module's parameters and buffers (names, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


class OpenVINOImageEncoder(nn.Module):
    """Stands in for segment-anything's ImageEncoderViT (Sam reads `img_size` from it)."""

    def __init__(self, compiled, img_size: int) -> None:
        super().__init__()
        self.compiled = compiled
        self.img_size = img_size

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        # copied in and out: a shared input would leave the infer request holding memory
        # of a temporary array after this call (12 MB a pass; nothing next to 8 s)
        pixels = image.detach().cpu().float().numpy()
        result = self.compiled(pixels, share_inputs=False, share_outputs=False)
        return torch.from_numpy(result[0])


def _export(encoder: nn.Module, target: Path) -> None:
    """ONNX through PyTorch's TorchScript-based exporter: it needs no package beyond
    onnx's protobuf writer built into torch, and it exports ViT-B in under a minute
    (OpenVINO's own converter took over five on the same machine)."""
    example = torch.zeros(1, 3, encoder.img_size, encoder.img_size)
    with torch.no_grad():
        torch.onnx.export(
            encoder, (example,), str(target), input_names=["image"],
            output_names=["embedding"], opset_version=17, dynamo=False,
        )  # fmt: skip


def compile_image_encoder(
    encoder: nn.Module, threads: int | None = None, cache_dir: Path | None = None
) -> OpenVINOImageEncoder:
    """The encoder compiled by OpenVINO for the CPU, fp32, on `threads` threads
    (default: torch's). The OpenVINO model is cached under cache_dir by weights hash."""
    import openvino as ov

    threads = threads or torch.get_num_threads()
    cache_dir = cache_dir or default_cache_dir()
    key = weights_key(encoder)
    cached = cache_dir / f"sam_image_encoder_{key}.xml"
    core = ov.Core()
    cache_dir.mkdir(parents=True, exist_ok=True)
    # processes of a sharded run start together: one exports, the others wait and read it
    # (an .xml of one export beside the .bin of another would not load)
    with open(cache_dir / f"{cached.stem}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if cached.is_file():
            model = core.read_model(str(cached))
        else:
            log.info("Exporting the SAM image encoder for OpenVINO (once; cached in %s)", cache_dir)
            with tempfile.TemporaryDirectory(dir=cache_dir) as scratch:
                onnx_file = Path(scratch) / "encoder.onnx"
                _export(encoder, onnx_file)
                model = core.read_model(str(onnx_file))
                # fp32 weights as exported: fp16 compression would change the outputs
                partial = Path(scratch) / cached.name
                ov.save_model(model, str(partial), compress_to_fp16=False)
                partial.with_suffix(".bin").replace(cached.with_suffix(".bin"))
                partial.replace(cached)  # the .xml last: its presence means both are whole
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": "f32"}
    compiled = core.compile_model(model, "CPU", config)
    return OpenVINOImageEncoder(compiled, encoder.img_size)
