"""Export a checkpoint to TorchScript (and ONNX where the ops allow) for one input size,
then check the exported model against PyTorch (replaces `mim run mmseg pytorch2torchscript`).

    python tools/pytorch2torchscript.py configs/dinov2_vitb14_coralsegv4_ms_config_segformer.py \
        --checkpoint work_dirs/<run>/best_mIoU_epoch_140.pth --output-file model.pt \
        --shape 1920 1920 [--onnx]

The exported model takes a float BGR image batch (N, 3, H, W) with values 0-255 and
returns class logits (N, C, H, W): normalisation and whole-image inference are inside.
"""

from __future__ import annotations

import argparse
import sys
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
        "--onnx", action="store_true", help="also write <output>.onnx (needs the onnx package)"
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
            torch.onnx.export(
                wrapper, (example,), str(onnx_file), input_names=["image"], output_names=["logits"]
            )
            print(f"ONNX: {onnx_file}")
        except Exception as exc:  # missing onnx package or an op the exporter lacks: say which
            print(f"ONNX export not possible here: {type(exc).__name__}: {exc}", file=sys.stderr)
            status = status or 3
    return status


if __name__ == "__main__":
    sys.exit(main())
