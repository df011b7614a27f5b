"""Export a checkpoint to TorchScript (and ONNX with --onnx) for one input size, then check
each exported model against PyTorch (replaces `mim run mmseg pytorch2torchscript`).

    python tools/pytorch2torchscript.py configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py \
        --checkpoint work_dirs/<run>/best_mIoU_epoch_140.pth --output-file model.pt \
        --shape 1920 1920 [--onnx]

The exported model takes a float BGR image batch (N, 3, H, W) with values 0-255 and
returns class logits (N, C, H, W): normalisation and whole-image inference are inside.

Prefer the ONNX file for new deployments: PyTorch deprecates TorchScript, while ONNX runs
in ONNX Runtime, OpenVINO (what CVAT's CPU functions use) and TensorRT. It is written by
torch's TorchScript-based ONNX exporter (needs the `onnx` package, a dependency of the
toolkit; the newer torch.export-based exporter would also need onnxscript) and checked
here by running it in OpenVINO.
"""

from __future__ import annotations

import argparse
import sys
from contextlib import contextmanager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from torch import nn  # noqa: E402

from inferencer import SemanticSegmenter  # noqa: E402


class ExportableSegmentor(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        preprocessor = model.data_preprocessor
        self.register_buffer("mean", preprocessor.mean.detach().clone())
        self.register_buffer("std", preprocessor.std.detach().clone())
        self.bgr_to_rgb = bool(preprocessor.channel_conversion)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.bgr_to_rgb:
            image = image.flip(1)
        x = (image - self.mean) / self.std
        shape = tuple(x.shape[-2:])
        metas = [dict(img_shape=shape, pad_shape=shape, ori_shape=shape)] * x.shape[0]
        return self.model.encode_decode(x, metas)


def compare(reference: torch.Tensor, exported: torch.Tensor) -> dict:
    diff = (reference - exported).abs()
    return dict(
        max_abs=float(diff.max()),
        relative=float(diff.norm() / reference.norm().clamp(min=1e-12)),
        same_argmax=float((reference.argmax(1) == exported.argmax(1)).float().mean()),
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--output-file", type=Path, required=True, help="TorchScript file (.pt)")
    parser.add_argument("--shape", type=int, nargs=2, default=[1920, 1920], metavar=("H", "W"))
    parser.add_argument(
        "--onnx", action="store_true", help="also write <output>.onnx, checked in OpenVINO"
    )
    parser.add_argument(
        "--tolerance", type=float, default=1e-3, help="largest relative difference accepted"
    )
    args = parser.parse_args(argv)
    model = SemanticSegmenter(args.config, args.checkpoint, "cpu").model.eval()
    wrapper = ExportableSegmentor(model).eval()
    torch.manual_seed(0)
    example = torch.randint(0, 256, (1, 3, *args.shape)).float()
    probe = torch.randint(0, 256, (1, 3, *args.shape)).float()  # not the tracing input
    with torch.no_grad():
        traced = torch.jit.trace(wrapper, example, check_trace=False)
        traced.save(str(args.output_file))
        loaded = torch.jit.load(str(args.output_file))
        figures = compare(wrapper(probe), loaded(probe))
    print(
        f"TorchScript: {args.output_file} (input 1x3x{args.shape[0]}x{args.shape[1]}); "
        f"against PyTorch on another image: max |diff| {figures['max_abs']:.2e}, "
        f"relative {figures['relative']:.2e}, "
        f"same class {100 * figures['same_argmax']:.2f}% of pixels"
    )
    status = 0 if figures["relative"] <= args.tolerance else 1
    if status:
        print(
            f"ERROR: the exported model differs from PyTorch beyond {args.tolerance}",
            file=sys.stderr,
        )
    if args.onnx:
        onnx_file = args.output_file.with_suffix(".onnx")
        try:
            onnx_figures = export_onnx(wrapper, example, probe, onnx_file)
        except Exception as exc:  # an op the exporter lacks: say which
            print(f"ONNX export failed: {type(exc).__name__}: {exc}", file=sys.stderr)
            return status or 3
        print(
            f"ONNX: {onnx_file}; in OpenVINO against PyTorch on the other image: max |diff| "
            f"{onnx_figures['max_abs']:.2e}, relative {onnx_figures['relative']:.2e}, same "
            f"class {100 * onnx_figures['same_argmax']:.2f}% of pixels"
        )
        if onnx_figures["relative"] > args.tolerance:
            print(f"ERROR: the ONNX model differs from PyTorch beyond {args.tolerance}",
                  file=sys.stderr)  # fmt: skip
            status = status or 1
    return status


@contextmanager
def constant_position_embedding():
    """timm's ViT resizes its position embedding to the input's patch grid on every call,
    by an antialiased bicubic resize that ONNX has no operator for. An export is for one
    input size, so the resized embedding is a constant: computed once by timm's own
    function, then recorded by the exporter as a constant."""
    import timm.models.vision_transformer as vision_transformer

    resample = vision_transformer.resample_abs_pos_embed
    resized = {}

    def once(posemb, new_size, *args, **kwargs):
        key = tuple(int(side) for side in new_size)  # traced sizes come as tensors
        if key not in resized:
            resized[key] = resample(posemb, new_size, *args, **kwargs).detach()
        return resized[key]

    vision_transformer.resample_abs_pos_embed = once
    try:
        yield
    finally:
        vision_transformer.resample_abs_pos_embed = resample


def export_onnx(
    wrapper: nn.Module, example: torch.Tensor, probe: torch.Tensor, target: Path
) -> dict:
    """Write the ONNX file (under a temporary name, then renamed) and compare its outputs,
    run by OpenVINO on the CPU, with PyTorch's on `probe`."""
    import openvino as ov

    partial = target.with_name(f".{target.name}.partial")
    try:
        with torch.no_grad(), constant_position_embedding():
            wrapper(example)  # resizes the embedding outside the exporter's trace
            torch.onnx.export(
                wrapper, (example,), str(partial), input_names=["image"],
                output_names=["logits"], opset_version=17, dynamo=False,
            )  # fmt: skip
        compiled = ov.Core().compile_model(str(partial), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        exported = torch.from_numpy(compiled(probe.numpy())[0])
        with torch.no_grad():
            reference = wrapper(probe)
        partial.replace(target)
    finally:
        partial.unlink(missing_ok=True)
    return compare(reference, exported)


if __name__ == "__main__":
    sys.exit(main())
