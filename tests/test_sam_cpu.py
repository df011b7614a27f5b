"""CoralSCoP on a CPU: staged prompt decoding (models/sam_lean.py) and the OpenVINO image
encoder (models/sam_openvino.py) give what segment-anything's PyTorch code gives.

Tolerances: the staged decoder changes only the order of floating-point operations, so
its mask logits stay within 1e-4 of segment-anything's (absolute, logits of order 1;
measured 2e-7) and its kept sets are identical as long as no score lies within that of
a filter's threshold; OpenVINO's fp32 encoder stays within 1e-4 relative (bf16: see
tests/openvino_checks.py).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from models.mask_generator import CoralMaskGenerator, GeneratorSettings
from models.sam_lean import decode_prompts, two_way

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def sam():
    from openvino_checks import tiny_sam  # the same model the OpenVINO checks build

    return tiny_sam()


DECODER_TOLERANCE = 1e-4  # absolute, on logits, IoU predictions and coral probabilities


def threshold_between(values: torch.Tensor, margin: float) -> float:
    """A threshold near the median of `values` and more than `margin` from every one of
    them: midway between the two neighbours (sorted) nearest the median that are more than
    2 * margin apart. A threshold equal to a value (the median itself) lets rounding decide
    on which side that value falls, differently on different CPUs."""
    ordered = values.flatten().sort().values
    wide = (ordered.diff() > 2 * margin).nonzero().flatten()
    assert len(wide), f"no two neighbouring values more than {2 * margin} apart"
    below = int(wide[(wide - len(ordered) // 2).abs().argmin()])
    return float((ordered[below] + ordered[below + 1]) / 2)


def _prompts(sam, count: int, seed: int = 0):
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(1, 256, 64, 64, generator=generator)
    points = torch.rand(count, 2, generator=generator) * 1024
    return features, points


def test_two_way_transformer_matches_segment_anythings_per_prompt_copies(sam):
    transformer = sam.mask_decoder.transformer
    features, _ = _prompts(sam, 0)
    tokens = torch.randn(6, 7, 256, generator=torch.Generator().manual_seed(1))
    pe = sam.prompt_encoder.get_dense_pe()
    with torch.inference_mode():
        expected = transformer(features.expand(6, -1, -1, -1), pe.expand(6, -1, -1, -1), tokens)
        got = two_way(transformer, features, pe, tokens)
    for reference, ours in zip(expected, got, strict=True):
        assert ours.shape == reference.shape
        assert (ours - reference).abs().max() < 1e-4 * reference.abs().max()


@pytest.mark.parametrize("multimask", [False, True])
@pytest.mark.parametrize("use_category", [True, False])
def test_staged_decoding_keeps_the_same_outputs_as_the_batched_decoder(
    sam, multimask, use_category
):
    features, points = _prompts(sam, 24)
    settings = GeneratorSettings(multimask_output=multimask)
    batched = CoralMaskGenerator(sam, use_category, settings, staged=False)
    batched.predictor.features = features
    with torch.inference_mode():
        low_res, iou, coral = batched._decode(points)
        # a threshold in the middle of the predictions, so that both filters act, placed
        # where both decoders' predictions (within DECODER_TOLERANCE of each other) fall
        # on the same side of it
        threshold = threshold_between(iou, DECODER_TOLERANCE)
        staged = decode_prompts(sam, features, points, multimask, threshold, use_category)
        settings.pred_iou_thresh = threshold
        kept = batched._decode_kept(points)
    if use_category:  # the coral filter's fixed threshold, 0.5, needs the same margin
        assert (coral - 0.5).abs().min() > DECODER_TOLERANCE
    assert 0 < len(staged.iou) < len(iou), "the filters kept some outputs and dropped others"
    for reference, ours in zip(kept, (staged.low_res, staged.iou, staged.coral), strict=True):
        assert ours.shape == reference.shape
        assert (ours - reference).abs().max() < DECODER_TOLERANCE
    if not use_category:
        assert torch.equal(staged.coral, torch.ones_like(staged.coral))


def test_a_threshold_of_zero_keeps_every_output_and_none_passing_gives_empty_tensors(sam):
    features, points = _prompts(sam, 5)
    with torch.inference_mode():
        every = decode_prompts(sam, features, points, True, 0.0, False)
        none = decode_prompts(sam, features, points, False, 1e9, True)
    assert every.low_res.shape == (15, 256, 256) and len(every.iou) == 15
    assert none.low_res.shape == (0, 256, 256) and len(none.iou) == len(none.coral) == 0


def test_generator_gives_the_same_proposals_staged_and_batched(sam):
    from dataset.reef_demo import render_sample

    image, _ = render_sample(3, 160)
    settings = GeneratorSettings(
        points_per_side=6, crop_n_layers=1, pred_iou_thresh=0.0, stability_score_thresh=0.0,
        box_nms_thresh=1.0, crop_nms_thresh=1.0, min_mask_region_area=0,
    )  # fmt: skip
    staged = CoralMaskGenerator(sam, False, settings)
    assert staged.staged, "a model on the CPU decodes in stages by default"
    found = staged.generate(image)
    expected = CoralMaskGenerator(sam, False, settings, staged=False).generate(image)
    assert len(found) == len(expected) > 20
    # a logit within 1e-4 of the threshold may fall on the other side: count pixels
    differing = (found.masks != expected.masks).sum().item()
    assert differing <= 1e-5 * expected.masks.numel()
    assert torch.allclose(found.iou_preds, expected.iou_preds, atol=1e-4)


needs_openvino = pytest.mark.skipif(
    importlib.util.find_spec("openvino") is None, reason="the OpenVINO encoder needs openvino"
)  # found, not imported: the tests load it in processes of their own


def _in_a_fresh_process(check: str, tmp_path) -> None:
    """Run a check of tests/openvino_checks.py in its own process: OpenVINO's CPU plugin
    loaded into the long test process made it die (SIGSEGV) at the next subprocess start
    in the full suite, never alone; the toolkit's own processes are not long test runs."""
    code = f"import sys; import openvino_checks; openvino_checks.{check}(sys.argv[1])"
    result = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path)], cwd=ROOT, capture_output=True, text=True,
        timeout=600, env={**os.environ, "PYTHONPATH": str(ROOT / "tests")},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]


@needs_openvino
def test_openvino_encoder_matches_pytorch_and_is_cached(tmp_path):
    _in_a_fresh_process("encoder_matches_pytorch_and_is_cached", tmp_path)


@needs_openvino
def test_segmenter_with_openvino_gives_the_same_proposals_as_with_pytorch(tmp_path):
    _in_a_fresh_process("segmenter_gives_the_same_proposals", tmp_path)


@needs_openvino
def test_openvino_cache_is_capped_least_recently_used_first(tmp_path):
    _in_a_fresh_process("cache_is_bounded_least_recently_used_first", tmp_path)


@needs_openvino
def test_random_sam_weights_are_compiled_in_f32_and_not_cached(tmp_path):
    _in_a_fresh_process("random_weights_leave_no_cache_entry", tmp_path)


def test_threshold_between_keeps_its_margin():
    values = torch.tensor([0.1, 0.3, 0.30005, 0.5, 0.9])
    threshold = threshold_between(values, 1e-4)
    assert (values - threshold).abs().min() > 1e-4
    assert threshold == pytest.approx(0.400025), "the wide gap next to the median"
    with pytest.raises(AssertionError, match="apart"):
        threshold_between(torch.tensor([0.5, 0.50001]), 1e-4)


def test_runtime_choice_falls_back_to_pytorch_without_openvino():
    """In a process where `import openvino` fails, as on a machine without the package."""
    script = (
        "import sys; sys.modules['openvino'] = None\n"
        "import torch\n"
        "from models.sam_openvino import choose_runtime\n"
        "cpu = torch.device('cpu')\n"
        "print(choose_runtime('auto', cpu), choose_runtime('torch', cpu))\n"
        "try:\n"
        "    choose_runtime('openvino', cpu)\n"
        "except ValueError as exc:\n"
        "    print('refused:', exc)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr[-2000:]
    lines = result.stdout.splitlines()
    assert lines[0] == "torch torch"
    assert "openvino package is not installed" in lines[1]


@needs_openvino
def test_runtime_choice_with_openvino_installed(monkeypatch):
    from models.sam_openvino import choose_runtime

    cpu, gpu = torch.device("cpu"), torch.device("cuda", 0)
    assert choose_runtime("auto", cpu) == "openvino"
    assert choose_runtime("auto", gpu) == "torch", "a GPU keeps the PyTorch encoder"
    monkeypatch.setenv("CORAL_SAM_ENCODER_RUNTIME", "torch")
    assert choose_runtime(None, cpu) == "torch"
    with pytest.raises(ValueError, match="auto, openvino or torch"):
        choose_runtime("onnx", cpu)
    with pytest.raises(ValueError, match="CPU only"):
        choose_runtime("openvino", gpu)
