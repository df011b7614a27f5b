"""The CPU precision setting (models/cpu_precision.py): f32 by default on every CPU, bf16 on
request where the CPU has it natively, in both stages (the semantic model and SAM's image
encoder), from the CLI's --cpu-precision and the function's CORAL_CPU_PRECISION.

Most checks monkeypatch the CPU detection, so they run on any CPU (PyTorch emulates bf16
where the CPU lacks it, which is slow but exact to bf16's rounding); the check of what
OpenVINO compiles needs a CPU with bf16 and says so when it skips. Outputs are compared
within bf16's rounding (tests/openvino_checks.py, relative_tolerance).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from openvino_checks import TINY_SAM_ENCODER_PRODUCTS, relative_tolerance

from models import cpu_precision
from models.coralscop import SAM_TINY, Bf16ImageEncoder
from models.cpu_precision import choose_cpu_precision, missing_bf16, parse_cpu_flags
from models.mask_generator import GeneratorSettings

ROOT = Path(__file__).resolve().parents[1]
TINY_CONFIG = str(ROOT / "configs" / "reef_demo_tiny.py")
# matrix products in series in the tiny semantic model: patch embedding, 4 blocks x (qkv,
# q.k, attention.v, projection, fc1, fc2), the head's per-level, fusion and class convolutions
TINY_SEMANTIC_PRODUCTS = 1 + 4 * 6 + 3
FEW_POINTS = dict(points_per_side=2, crop_n_layers=0, pred_iou_thresh=0.0,
                  stability_score_thresh=0.0, min_mask_region_area=0)  # fmt: skip

X86_CPUINFO = """processor\t: 0
vendor_id\t: GenuineIntel
model name\t: Intel(R) Xeon(R) Processor
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile
bogomips\t: 5199.99

processor\t: 1
flags\t\t: fpu sse2 avx2 avx512f avx512_bf16 amx_tile amx_bf16
"""
ZEN3_CPUINFO = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu avx2 fma sha_ni\n"
ARM_CPUINFO = "processor\t: 0\nFeatures\t: fp asimd bf16 sve\nCPU implementer\t: 0x41\n"


@pytest.fixture
def bf16_cpu(monkeypatch):
    """Detection says: a CPU with AMX (whatever this one is)."""
    monkeypatch.setattr(cpu_precision, "read_cpu_flags", lambda: frozenset({"amx_bf16"}))
    for name in cpu_precision.ISA_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def f32_cpu(monkeypatch):
    """Detection says: a CPU without native bf16 (an AVX2 machine)."""
    monkeypatch.setattr(cpu_precision, "read_cpu_flags", lambda: frozenset({"avx2", "fma"}))


# ---- detection and the setting ---------------------------------------------------------


def test_cpu_flags_are_read_from_cpuinfo_text():
    flags = parse_cpu_flags(X86_CPUINFO)
    assert {"avx512_bf16", "amx_bf16", "avx2"} <= flags and "model" not in flags
    assert "amx_bf16" not in parse_cpu_flags(X86_CPUINFO.split("processor\t: 1")[0])
    assert parse_cpu_flags(ZEN3_CPUINFO) == {"fpu", "avx2", "fma", "sha_ni"}
    assert parse_cpu_flags(ARM_CPUINFO) == frozenset(), "only x86 flags lines are read"
    assert parse_cpu_flags("") == frozenset()


def test_native_bf16_needs_a_flag_and_no_onednn_limit_below_it():
    for flags in ({"avx512_bf16"}, {"amx_bf16"}, parse_cpu_flags(X86_CPUINFO)):
        assert missing_bf16(flags, environ={}) is None, flags
    reason = missing_bf16(parse_cpu_flags(ZEN3_CPUINFO), environ={})
    assert "avx512_bf16 and amx_bf16" in reason
    assert "cannot be read" in missing_bf16(None, environ={})
    # OpenVINO reports bf16 under these limits, then fails (AVX2) or emulates (VNNI)
    for limit in ("AVX2", "avx512_core_vnni"):
        reason = missing_bf16({"amx_bf16"}, environ={"ONEDNN_MAX_CPU_ISA": limit})
        assert f"ONEDNN_MAX_CPU_ISA={limit.upper()}" in reason
    assert "DNNL_MAX_CPU_ISA" in missing_bf16({"amx_bf16"}, environ={"DNNL_MAX_CPU_ISA": "AVX"})
    for limit in ("AVX512_CORE_BF16", "AVX512_CORE_AMX", "ALL", ""):
        assert missing_bf16({"amx_bf16"}, environ={"ONEDNN_MAX_CPU_ISA": limit}) is None


def test_the_setting_is_f32_unless_bf16_is_asked_for(monkeypatch):
    monkeypatch.delenv("CORAL_CPU_PRECISION", raising=False)

    def unread():
        raise AssertionError("f32 needs no detection")

    monkeypatch.setattr(cpu_precision, "read_cpu_flags", unread)
    assert choose_cpu_precision() == cpu_precision.CpuPrecision("f32", "f32")
    monkeypatch.setenv("CORAL_CPU_PRECISION", " F32 ")
    assert choose_cpu_precision().used == "f32"
    monkeypatch.setenv("CORAL_CPU_PRECISION", "fp16")
    with pytest.raises(ValueError, match="CORAL_CPU_PRECISION='fp16': use f32"):
        choose_cpu_precision()
    with pytest.raises(ValueError, match="--cpu-precision='half'"):
        choose_cpu_precision("half", "--cpu-precision")
    assert choose_cpu_precision("f32").used == "f32", "a value given wins over the variable"


def test_bf16_where_the_cpu_has_it(bf16_cpu, caplog):
    with caplog.at_level(logging.WARNING):
        assert choose_cpu_precision("bf16") == cpu_precision.CpuPrecision("bf16", "bf16")
    assert not caplog.records


def test_bf16_without_native_support_warns_and_runs_f32(f32_cpu, caplog):
    with caplog.at_level(logging.WARNING):
        chosen = choose_cpu_precision("bf16")
    assert (chosen.requested, chosen.used) == ("bf16", "f32")
    assert "avx512_bf16 and amx_bf16" in chosen.reason and "f32" in chosen.reason
    assert [r.getMessage() for r in caplog.records] == [chosen.reason]


# ---- both stages ------------------------------------------------------------------------


def _decode_head_outputs(segmenter, image) -> tuple[dict, torch.Tensor]:
    """What the semantic forward ran under (seen from inside it) and its logits."""
    seen = {}

    def hook(module, inputs, output):
        seen.update(autocast=torch.is_autocast_enabled("cpu"),
                    dtype=torch.get_autocast_dtype("cpu"), output=output.dtype)  # fmt: skip
        seen["logits"] = output.float()

    # the class convolution: the head's own forward is called directly, without hooks
    handle = segmenter.model.decode_head.conv_seg.register_forward_hook(hook)
    try:
        probs = segmenter.predict_probs(image)
    finally:
        handle.remove()
    return seen, probs


def test_the_semantic_forward_runs_under_bf16_autocast_when_asked(
    bf16_cpu, monkeypatch, random_semantic_checkpoint
):
    from dataset.reef_demo import render_sample
    from inferencer import SemanticSegmenter

    image, _ = render_sample(1, 96)
    checkpoint = str(random_semantic_checkpoint)
    f32 = SemanticSegmenter(TINY_CONFIG, checkpoint, "cpu")
    assert f32.bf16 is False, "f32 by default on a CPU, also where it has bf16"
    seen_f32, probs_f32 = _decode_head_outputs(f32, image)
    assert seen_f32["autocast"] is False and seen_f32["output"] == torch.float32
    monkeypatch.setenv("CORAL_CPU_PRECISION", "bf16")
    bf16 = SemanticSegmenter(TINY_CONFIG, checkpoint, "cpu")
    assert bf16.bf16 is True
    seen, probs = _decode_head_outputs(bf16, image)
    assert seen["autocast"] and seen["dtype"] == torch.bfloat16
    assert seen["output"] == torch.bfloat16
    assert probs.dtype == torch.float32, "probabilities stay f32"
    assert torch.allclose(probs.sum(0), torch.ones(()), atol=1e-5)
    reference = seen_f32["logits"]
    difference = (seen["logits"] - reference).abs().max()
    tolerance = relative_tolerance("bf16", 0.0, TINY_SEMANTIC_PRODUCTS)
    assert 0 < difference < tolerance * reference.abs().max(), "bf16's rounding, no more"


def test_the_pytorch_sam_encoder_runs_in_bf16_and_decoding_in_f32(bf16_cpu):
    from dataset.reef_demo import render_sample
    from inferencer import CoralSCoPSegmenter

    settings = GeneratorSettings(**FEW_POINTS)
    torch.manual_seed(0)
    segmenter = CoralSCoPSegmenter(None, "cpu", settings, SAM_TINY, "torch", bf16=True)
    encoder = segmenter.generator.sam.image_encoder
    assert isinstance(encoder, Bf16ImageEncoder)
    seen = {"qkv": []}
    handle = encoder.encoder.blocks[0].attn.qkv.register_forward_hook(
        lambda module, inputs, output: seen["qkv"].append(output.dtype)
    )
    pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        got, expected = encoder(pixels), encoder.encoder(pixels)
    handle.remove()
    assert seen["qkv"] == [torch.bfloat16, torch.float32], "bf16 inside the wrapper only"
    assert got.dtype == torch.float32, "the embedding is handed on in f32"
    tolerance = relative_tolerance("bf16", 0.0, TINY_SAM_ENCODER_PRODUCTS)
    assert 0 < (got - expected).abs().max() < tolerance * expected.abs().max()
    generate = segmenter.generator.generate

    def watched(image):
        seen["decoding_autocast"] = torch.is_autocast_enabled("cpu")
        return generate(image)

    segmenter.generator.generate = watched
    image, _ = render_sample(0, 64)
    assert len(segmenter.propose(image)) > 0
    assert seen["decoding_autocast"] is False, "prompts are decoded in f32 on a CPU"


def test_two_stage_inference_is_f32_on_a_cpu_by_default(bf16_cpu, random_semantic_checkpoint):
    from segment_anything.modeling import ImageEncoderViT

    from inferencer import TwoStageInferencer

    model = TwoStageInferencer(
        TINY_CONFIG, str(random_semantic_checkpoint), None, "cpu",
        generator=GeneratorSettings(**FEW_POINTS), sam_encoder=SAM_TINY,
    )  # fmt: skip
    assert model.cpu_precision.used == "f32"
    assert model.semantic.bf16 is False and model.instances.bf16 is False
    assert isinstance(model.instances.generator.sam.image_encoder, ImageEncoderViT)


def test_two_stage_inference_takes_bf16_to_both_stages(bf16_cpu, random_semantic_checkpoint):
    from inferencer import TwoStageInferencer

    model = TwoStageInferencer(TINY_CONFIG, str(random_semantic_checkpoint), None, "cpu",
                               generator=GeneratorSettings(**FEW_POINTS), sam_encoder=SAM_TINY,
                               cpu_precision="bf16")  # fmt: skip
    assert model.cpu_precision.used == "bf16"
    assert model.semantic.bf16 is True and model.instances.bf16 is True
    assert isinstance(model.instances.generator.sam.image_encoder, Bf16ImageEncoder)


def test_two_stage_inference_without_native_bf16_warns_once_and_runs_f32(
    f32_cpu, random_semantic_checkpoint, caplog
):
    from inferencer import TwoStageInferencer

    with caplog.at_level(logging.WARNING):
        model = TwoStageInferencer(TINY_CONFIG, str(random_semantic_checkpoint), None, "cpu",
                                   generator=GeneratorSettings(**FEW_POINTS),
                                   sam_encoder=SAM_TINY, cpu_precision="bf16")  # fmt: skip
    assert model.cpu_precision.used == "f32"
    assert model.semantic.bf16 is False and model.instances.bf16 is False
    warnings = [r.getMessage() for r in caplog.records if r.name == "models.cpu_precision"]
    assert len(warnings) == 1 and "avx512_bf16 and amx_bf16" in warnings[0]


OPENVINO_CHECK = r"""
import logging, os, sys
import torch
from openvino_checks import TINY_SAM_ENCODER_PRODUCTS, precision_of, relative_tolerance, tiny_sam
from inferencer import CoralSCoPSegmenter
from models.coralscop import SAM_TINY
from models.mask_generator import GeneratorSettings
from models.sam_openvino import compile_image_encoder

os.environ["CORAL_CACHE_DIR"] = sys.argv[1]
settings = GeneratorSettings(points_per_side=2, crop_n_layers=0)
pixels = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
encoders = {}
for bf16 in (None, True):
    torch.manual_seed(0)  # the same random weights for both
    segmenter = CoralSCoPSegmenter(None, "cpu", settings, SAM_TINY, "openvino", bf16=bf16)
    encoders[bf16] = segmenter.generator.sam.image_encoder
assert precision_of(encoders[None].compiled) == "f32", "f32 by default"
assert precision_of(encoders[True].compiled) == "bf16"
expected, got = encoders[None](pixels), encoders[True](pixels)
tolerance = relative_tolerance("bf16", 0.0, TINY_SAM_ENCODER_PRODUCTS)
assert 0 < (got - expected).abs().max() < tolerance * expected.abs().max()
# oneDNN limited below bf16: OpenVINO would emulate it; f32 with a warning instead
os.environ["ONEDNN_MAX_CPU_ISA"] = "AVX512_CORE_VNNI"
logging.basicConfig(level=logging.WARNING)
torch.manual_seed(0)
plain = CoralSCoPSegmenter(None, "cpu", settings, SAM_TINY, "openvino", bf16=True)
assert precision_of(plain.generator.sam.image_encoder.compiled) == "f32"
direct = compile_image_encoder(tiny_sam().image_encoder, threads=1, cache=False, precision="bf16")
assert precision_of(direct.compiled) == "f32", "compile_image_encoder checks the CPU too"
print("OK")
"""


@pytest.mark.skipif(importlib.util.find_spec("openvino") is None, reason="needs openvino")
def test_openvino_compiles_the_sam_encoder_in_the_precision_asked(tmp_path):
    """On a CPU with native bf16 only: elsewhere OpenVINO runs f32 whatever is asked."""
    absent = missing_bf16(cpu_precision.read_cpu_flags())
    if absent is not None:
        pytest.skip(f"needs a CPU with native bf16: {absent}")
    env = {**os.environ, "PYTHONPATH": str(ROOT / "tests")}
    env.pop("ONEDNN_MAX_CPU_ISA", None)
    # a process of its own: OpenVINO's plugin in the long test process (tests/test_sam_cpu.py)
    result = subprocess.run([sys.executable, "-c", OPENVINO_CHECK, str(tmp_path)], cwd=ROOT,
                            env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert "ONEDNN_MAX_CPU_ISA=AVX512_CORE_VNNI keeps oneDNN below" in result.stderr


# ---- the CVAT function ------------------------------------------------------------------


def _function_main():
    spec = importlib.util.spec_from_file_location("nuclio_main", ROOT / "nuclio" / "main.py")
    main = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(main)
    return main


class _Context:
    """What init_context uses of Nuclio's context: a logger and user_data."""

    def __init__(self) -> None:
        import types

        self.logged: list[tuple[str, str]] = []
        self.logger = types.SimpleNamespace(
            **{level: (lambda m, level=level: self.logged.append((level, m)))
               for level in ("info", "warn", "error")}
        )  # fmt: skip
        self.user_data = types.SimpleNamespace()


@pytest.fixture
def function(monkeypatch):
    """nuclio/main.py with its bundle check off and a stand-in model that records its
    arguments (init_context's own decisions are what is tested here)."""
    import inferencer

    main = _function_main()
    monkeypatch.setattr(main, "_require_bundle_files", lambda semantic_only: None)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.delenv("CORAL_SEMANTIC_ONLY", raising=False)
    made = []

    class Recorded:
        classes = ["background", "Acropora"]

        def __init__(self, *args, **kwargs) -> None:
            made.append(kwargs)

    monkeypatch.setattr(inferencer, "TwoStageInferencer", Recorded)
    threads = torch.get_num_threads()
    yield main, made
    torch.set_num_threads(threads)  # init_context sets one thread per core given


def test_the_function_reads_coral_cpu_precision(function, monkeypatch, bf16_cpu):
    main, made = function
    from models.cpu_precision import choose_cpu_precision  # what function_device reads

    monkeypatch.delenv("CORAL_CPU_PRECISION", raising=False)
    assert choose_cpu_precision().used == "f32"
    main.init_context(_Context())
    monkeypatch.setenv("CORAL_CPU_PRECISION", "bf16")
    assert choose_cpu_precision().used == "bf16"
    context = _Context()
    main.init_context(context)
    assert [m["cpu_precision"] for m in made] == ["f32", "bf16"]
    assert any("bf16" in message for level, message in context.logged if level == "info")


def test_the_function_warns_and_runs_f32_without_native_bf16(function, monkeypatch, f32_cpu):
    main, made = function
    monkeypatch.setenv("CORAL_CPU_PRECISION", "bf16")
    context = _Context()
    main.init_context(context)
    assert made[-1]["cpu_precision"] == "f32"
    warnings = [message for level, message in context.logged if level == "warn"]
    assert len(warnings) == 1 and "avx512_bf16 and amx_bf16" in warnings[0]


@pytest.mark.parametrize("gpu", [False, True])
def test_the_function_refuses_a_bad_precision_before_loading_anything(function, monkeypatch, gpu):
    main, made = function
    monkeypatch.setattr(torch.cuda, "is_available", lambda: gpu)  # a typo fails on GPUs too
    monkeypatch.setenv("CORAL_CPU_PRECISION", "fp16")
    context = _Context()
    with pytest.raises(ValueError, match="CORAL_CPU_PRECISION='fp16': use f32"):
        main.init_context(context)
    assert not made
    assert context.logged[-1][0] == "error" and "cannot start" in context.logged[-1][1]


def test_function_yaml_declares_f32_also_for_semantic_only_bundles():
    import yaml

    from nuclio.package import render_function_yaml

    template = ROOT / "nuclio" / "function.yaml"
    for semantic_only in (False, True):
        spec = yaml.safe_load(render_function_yaml(template, "x", ["bg", "a"], semantic_only))
        env = {e["name"]: e["value"] for e in spec["spec"]["env"]}
        assert env["CORAL_CPU_PRECISION"] == "f32", semantic_only


# ---- the command line -------------------------------------------------------------------

REQUIRED = ["--input-dir", "in", "--output-dir", "out", "--segformer-config", "c.py",
            "--segformer-weights", "w.pth"]  # fmt: skip


def test_the_cli_flag_and_what_the_run_records(monkeypatch, capsys):
    import inference_with_coralscop as cli
    from engine.batch_inference import _settings

    monkeypatch.delenv("CORAL_CPU_PRECISION", raising=False)
    args = cli.parse_args(REQUIRED)
    assert args.cpu_precision is None
    assert "cpu_precision" not in _settings(args)[2], "f32 runs resume earlier folders"
    args = cli.parse_args([*REQUIRED, "--cpu-precision", "bf16"])
    assert args.cpu_precision == "bf16" and _settings(args)[2]["cpu_precision"] == "bf16"
    monkeypatch.setenv("CORAL_CPU_PRECISION", "bf16")
    assert _settings(cli.parse_args(REQUIRED))[2]["cpu_precision"] == "bf16", "the variable"
    for wrong, named in ((["--cpu-precision", "fp16"], "--cpu-precision"), ([], "CORAL_CPU")):
        monkeypatch.setenv("CORAL_CPU_PRECISION", "half")
        with pytest.raises(SystemExit) as exit_:
            cli.parse_args([*REQUIRED, *wrong])
        assert exit_.value.code == 2 and named in capsys.readouterr().err


# ---- the benchmark ----------------------------------------------------------------------


def test_mask_matching_of_the_precision_bench():
    sys.path.insert(0, str(ROOT / "bench"))
    from cpu_precision_bench import match_masks

    a = np.zeros((3, 8, 8), bool)
    a[0, :4], a[1, 4:, :4], a[2, 6:, 6:] = True, True, True
    b = a[[1, 0]].copy()  # another order, one mask missing
    b[1, 3] = False  # 24 of the 32 pixels of a[0]
    found = match_masks(
        a,
        b,
    )
    assert found == dict(f32=3, bf16=2, matched=2, median_iou=0.875, min_iou=0.75,
                         share_iou_over_0_9=0.5)  # fmt: skip
    assert match_masks(a, b[:0])["matched"] == 0


def test_cpu_precision_bench_smallest_setting(capsys):
    sys.path.insert(0, str(ROOT / "bench"))
    import cpu_precision_bench

    result = cpu_precision_bench.main(smoke=True)
    assert (
        result["runs"]["f32"]["sam"]["ran"] == "f32"
        and result["runs"]["f32"]["tiny"]["seconds"] > 0
    )
    if missing_bf16(cpu_precision.read_cpu_flags()) is None:
        bf16 = result["runs"]["bf16"]
        assert bf16["sam"]["ran"] == bf16["tiny"]["ran"] == "bf16"
        agreement = result["agreement"]
        assert 0 < agreement["sam_embedding_max_diff_rel"] < 0.1
        assert 0.5 < agreement["tiny_pixel_agreement"] <= 1
    else:
        assert result["runs"]["bf16"] == "not measured" and result["bf16_absent"]
    assert '"benchmark": "cpu_precision"' in capsys.readouterr().out
