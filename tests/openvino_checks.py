"""OpenVINO checks of tests/test_sam_cpu.py, each run in a process of its own there, and the
suite's one way to compile with OpenVINO.

Precision: OpenVINO's CPU default is bf16 on CPUs with AMX or avx512_bf16 and f32 elsewhere,
so a compile that states none makes a test pass on one machine and fail on another. Every
compile in the tests states it: f32, or bf16 when OPENVINO_TEST_PRECISION=bf16 (a run with
it shows that no test leans on the default). Tests that compare with PyTorch's f32 then
accept the difference the precision that actually ran allows (relative_tolerance).
"""

from __future__ import annotations

import math
import os
import time
from pathlib import Path

import torch

from models.coralscop import SAM_TINY, build_coralscop
from models.mask_generator import GeneratorSettings

# not CORAL_*: tests/conftest.py clears those (they are the user's settings)
PRECISION_VARIABLE = "OPENVINO_TEST_PRECISION"
U_BF16 = 2.0**-8  # bf16's unit roundoff: 8 significant bits (7 stored, 1 implicit)
# matrix products (matmuls, convolutions) in series from input to output, for the tolerance:
# tiny SAM encoder: patch embedding, 2 blocks x (qkv, q.k, attention.v, projection, fc1, fc2),
# the neck's 2 convolutions
TINY_SAM_ENCODER_PRODUCTS = 1 + 2 * 6 + 2


def requested_precision() -> str:
    """'f32' unless OPENVINO_TEST_PRECISION asks for 'bf16'."""
    precision = os.environ.get(PRECISION_VARIABLE, "f32").strip().lower() or "f32"
    if precision not in ("f32", "bf16"):
        raise ValueError(f"{PRECISION_VARIABLE}={precision!r}: use f32 or bf16")
    return precision


def precision_of(compiled) -> str:
    """The precision a compiled model runs in: a CPU without bf16 runs f32 whatever is asked."""
    return compiled.get_property("INFERENCE_PRECISION_HINT").get_type_name()


def compile_for_test(model: str | Path, precision: str | None = None):
    """An ONNX or OpenVINO model compiled for the CPU in a stated precision (default:
    requested_precision()); returns (compiled model, precision it runs in)."""
    import openvino as ov

    precision = precision or requested_precision()
    compiled = ov.Core().compile_model(str(model), "CPU", {"INFERENCE_PRECISION_HINT": precision})
    return compiled, precision_of(compiled)


def relative_tolerance(precision: str, f32: float, products: int) -> float:
    """The largest difference from PyTorch's f32 output accepted, relative to the output's
    largest value, for a model with `products` matrix products in series.

    f32: `f32`, the caller's bound for a runtime that only orders additions differently.
    bf16: every product reads its two operands rounded to bf16 and its result is rounded
    again: 3 roundings of relative error at most u = 2^-8, independent and uniform
    (standard deviation u / sqrt(3) each), so u per product; normalisations between
    products keep relative errors from growing, so the standard deviation over the chain
    is u * sqrt(products), and 5 of them bound the largest of up to a million output
    elements (a first-order estimate; measured: a third of it or less)."""
    if precision == "f32":
        return f32
    if precision == "bf16":
        return 5 * U_BF16 * math.sqrt(products)
    raise ValueError(f"no tolerance for precision {precision!r}")


def tiny_sam():
    """A tiny encoder; the mask decoder and category head have CoralSCoP's full size."""
    torch.manual_seed(0)
    model = build_coralscop(SAM_TINY)
    with torch.no_grad():  # random weights put the IoU predictions around 0: spread them
        model.mask_decoder.iou_prediction_head.layers[-1].bias.add_(0.5)
    return model


def encoder_matches_pytorch_and_is_cached(folder: str) -> None:
    from models.sam_openvino import compile_image_encoder

    cache = Path(folder)
    sam = tiny_sam()
    image = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = sam.image_encoder(image)
    precision = requested_precision()
    encoder = compile_image_encoder(
        sam.image_encoder, threads=1, cache_dir=cache, precision=precision
    )
    ran = precision_of(encoder.compiled)
    assert ran == precision or (precision == "bf16" and ran == "f32"), ran  # no bf16 on the CPU
    got = encoder(image)
    assert got.shape == expected.shape
    # f32: the two runtimes order additions differently; measured 2e-6
    tolerance = relative_tolerance(ran, 1e-4, TINY_SAM_ENCODER_PRODUCTS)
    assert (got - expected).abs().max() < tolerance * expected.abs().max()

    def model_files():
        return sorted((p.name, p.stat().st_mtime_ns) for p in cache.iterdir()
                      if p.suffix in (".bin", ".xml"))  # fmt: skip

    cached = model_files()
    assert [Path(name).suffix for name, _ in cached] == [".bin", ".xml"]
    assert not [p for p in cache.iterdir() if p.is_dir()], "no scratch folder left"
    again = compile_image_encoder(sam.image_encoder, threads=1, cache_dir=cache, precision=ran)
    assert torch.equal(again(image), got), "read back from the cache"
    assert [name for name, _ in model_files()] == [name for name, _ in cached], "no new export"
    assert model_files()[0] == cached[0], "the .bin is not written again"
    assert model_files()[1][1] > cached[1][1], "a use updates the .xml's time (LRU order)"


def segmenter_gives_the_same_proposals(folder: str) -> None:
    """Explicitly f32 (the toolkit's default, checked here): the claim is identical
    proposals, which only f32 gives; bf16's agreement is encoder_matches_pytorch's."""
    from dataset.reef_demo import render_sample
    from inferencer import CoralSCoPSegmenter

    os.environ["CORAL_CACHE_DIR"] = folder
    image, _ = render_sample(4, 128)
    settings = GeneratorSettings(
        points_per_side=4, crop_n_layers=0, pred_iou_thresh=0.0, stability_score_thresh=0.0
    )
    runs = {}
    for runtime in ("torch", "openvino"):
        torch.manual_seed(0)
        segmenter = CoralSCoPSegmenter(None, "cpu", settings, SAM_TINY, encoder_runtime=runtime)
        assert segmenter.encoder_runtime == runtime
        if runtime == "openvino":
            assert precision_of(segmenter.generator.sam.image_encoder.compiled) == "f32"
        runs[runtime] = segmenter.propose(image)
    assert len(runs["torch"]) == len(runs["openvino"]) > 0
    differing = (runs["torch"].masks != runs["openvino"].masks).sum().item()
    assert differing <= 1e-5 * runs["torch"].masks.numel()
    assert not list(Path(folder).rglob("*.xml")), "random weights are not cached"


def cache_is_bounded_least_recently_used_first(folder: str) -> None:
    """The tiny SAM's encoder (about 3 MB) in a cache with two older fake entries and a cap
    that holds the encoder and one of them: the one used longest ago goes."""
    from models.sam_openvino import ENTRY_PREFIX, cache_entries, compile_image_encoder

    cache = Path(folder)
    cache.mkdir(exist_ok=True)
    now = time.time()
    for name, age in (("old", 300), ("older", 600)):
        for suffix, size in ((".xml", 1000), (".bin", 100_000)):
            path = cache / f"{ENTRY_PREFIX}{name}{suffix}"
            path.write_bytes(b"\0" * size)
            os.utime(path, (now - age, now - age))
    os.environ["CORAL_CACHE_MAX_MB"] = "1000"  # first, room for all three
    sam = tiny_sam()
    compile_image_encoder(sam.image_encoder, threads=1, cache_dir=cache)
    entries = cache_entries(cache)
    assert [e.stem for e in entries[:2]] == [f"{ENTRY_PREFIX}older", f"{ENTRY_PREFIX}old"]
    encoder_size = entries[2].size
    # a cap for the encoder and one fake entry (101 kB each), not two; using "older" makes
    # "old" the least recently used
    os.utime(cache / f"{ENTRY_PREFIX}older.xml")
    os.environ["CORAL_CACHE_MAX_MB"] = str((encoder_size + 150_000) / 2**20)
    compile_image_encoder(sam.image_encoder, threads=1, cache_dir=cache)
    stems = [e.stem for e in cache_entries(cache)]
    assert f"{ENTRY_PREFIX}old" not in stems and f"{ENTRY_PREFIX}older" in stems, stems
    assert not (cache / f"{ENTRY_PREFIX}old.lock").exists(), "its lock file went too"
    # a cap below the encoder alone: the encoder in use stays, everything else goes
    os.environ["CORAL_CACHE_MAX_MB"] = "0"
    compile_image_encoder(sam.image_encoder, threads=1, cache_dir=cache)
    remaining = cache_entries(cache)
    assert len(remaining) == 1 and remaining[0].size == encoder_size


def random_weights_leave_no_cache_entry(folder: str) -> None:
    from models.coralscop import load_coralscop
    from models.sam_openvino import compile_image_encoder

    cache = Path(folder)
    sam, _ = load_coralscop(None, SAM_TINY)
    image = torch.randn(1, 3, 1024, 1024, generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        expected = sam.image_encoder(image)
    encoder = compile_image_encoder(sam.image_encoder, threads=1, cache_dir=cache)
    assert precision_of(encoder.compiled) == "f32", "f32 unless asked, on every CPU"
    got = encoder(image)
    assert (got - expected).abs().max() < 1e-4 * expected.abs().max(), "the same encoder"
    assert not cache.exists() or not list(cache.iterdir()), "nothing written to the cache"
    # the same model with weights from a checkpoint is cached
    loaded = build_coralscop(SAM_TINY)
    loaded.load_state_dict(sam.state_dict())
    compile_image_encoder(loaded.image_encoder, threads=1, cache_dir=cache)
    assert len(list(cache.glob("*.xml"))) == 1
