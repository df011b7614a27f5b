"""SAM's image encoder through OpenVINO on a CPU (optional: `pip install openvino`).

Automatic mask generation at CoralSCoP's settings runs the ViT-B image encoder five
times per 1920 px quadrat (the image and four crops, each at 1024 px): on a CPU that
is about half of the time once prompt decoding is lean (models/sam_lean.py). OpenVINO,
the runtime of CVAT's own CPU functions, runs the same graph in fp32 faster than
PyTorch on the project's 2-core machines (bench/RESULTS.md). The encoder is exported
to ONNX once (TorchScript-based exporter, no extra package) and read by OpenVINO;
the compiled model is kept in a cache folder keyed by a hash of the weights, so a
restarted function does not export again.

The cache is bounded: CORAL_CACHE_MAX_MB (default 2048 MiB, about five ViT-B encoders)
with the least recently used encoders removed first, and `python -m models.sam_openvino
--clear-cache` empties it. Random weights (no SAM checkpoint) are exported for their run
only: a new random draw hashes to a new key that is never asked for again, so caching it
only filled the user's home (358 MB a run).

The precision is stated, never left to OpenVINO: its CPU default is bf16 on CPUs with
AMX or avx512_bf16, f32 elsewhere, so the same call would give different embeddings on
different machines. f32 unless bf16 is asked for (CORAL_CPU_PRECISION or --cpu-precision,
models/cpu_precision.py), and bf16 only where the CPU has it natively: elsewhere OpenVINO
emulates it or, with oneDNN limited below it, fails to compile; f32 then, with a warning.

Without OpenVINO, or on a GPU, the PyTorch encoder runs as before.
"""

from __future__ import annotations

import argparse
import fcntl
import hashlib
import logging
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

log = logging.getLogger(__name__)

RUNTIME_VARIABLE = "CORAL_SAM_ENCODER_RUNTIME"  # auto | openvino | torch
CACHE_VARIABLE = "CORAL_CACHE_DIR"
CACHE_LIMIT_VARIABLE = "CORAL_CACHE_MAX_MB"
DEFAULT_CACHE_LIMIT_MB = 2048.0
PRECISIONS = ("f32", "bf16")
ENTRY_PREFIX = "sam_image_encoder_"
MIB = 1024 * 1024


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


def cache_limit_bytes() -> int:
    """The cache's size cap: CORAL_CACHE_MAX_MB (MiB, fractions allowed), default 2048."""
    raw = os.environ.get(CACHE_LIMIT_VARIABLE, "").strip()
    try:
        limit_mb = float(raw) if raw else DEFAULT_CACHE_LIMIT_MB
    except ValueError:
        raise ValueError(f"{CACHE_LIMIT_VARIABLE}={raw!r}: give a size in MiB, e.g. 2048") from None
    if not limit_mb >= 0:  # also refuses nan
        raise ValueError(f"{CACHE_LIMIT_VARIABLE}={raw!r}: the size cannot be negative")
    return int(limit_mb * MIB)


def weights_key(module: nn.Module) -> str:
    """A hash of a module's parameters and buffers (names, shapes, values)."""
    digest = hashlib.sha256()
    for name, tensor in module.state_dict().items():
        digest.update(f"{name}{tuple(tensor.shape)}{tensor.dtype}".encode())
        digest.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:24]


@dataclass(frozen=True)
class CacheEntry:
    """One cached encoder: its files (.xml and .bin; a lone .bin if an export was killed
    between its two renames), their size, and when it was last used (the .xml's mtime,
    set at every use)."""

    stem: str
    files: tuple[Path, ...]
    size: int
    last_used: float


def cache_entries(cache_dir: Path) -> list[CacheEntry]:
    """The cache's encoders, least recently used first."""
    if not cache_dir.is_dir():
        return []
    stems: dict[str, list[Path]] = {}
    for path in cache_dir.iterdir():
        if path.name.startswith(ENTRY_PREFIX) and path.suffix in (".xml", ".bin"):
            stems.setdefault(path.stem, []).append(path)
    entries = []
    for stem, files in stems.items():
        try:
            stats = {path.suffix: path.stat() for path in files}
        except FileNotFoundError:  # removed meanwhile by another process
            continue
        used = (stats.get(".xml") or stats[".bin"]).st_mtime
        size = sum(stat.st_size for stat in stats.values())
        entries.append(CacheEntry(stem, tuple(sorted(files)), size, used))
    return sorted(entries, key=lambda entry: (entry.last_used, entry.stem))


@contextmanager
def _entry_lock(cache_dir: Path, stem: str, wait: bool = True) -> Iterator[bool]:
    """An exclusive lock on one entry (its .lock file); yields False when `wait` is off and
    another process holds it. Processes of a sharded run start together: one exports, the
    others wait and read it (an .xml of one export beside the .bin of another would not
    load). Eviction removes the lock file while holding it, so a process that opened the
    file before that and then got the lock checks that it locked the file now at that path."""
    path = cache_dir / f"{stem}.lock"
    while True:
        with open(path, "a") as handle:
            flags = fcntl.LOCK_EX if wait else fcntl.LOCK_EX | fcntl.LOCK_NB
            try:
                fcntl.flock(handle, flags)
            except BlockingIOError:
                yield False
                return
            try:
                current = os.fstat(handle.fileno()).st_ino == path.stat().st_ino
            except FileNotFoundError:
                current = False
            if current:
                yield True
                return
            if not wait:
                yield False
                return


def _remove(cache_dir: Path, entry: CacheEntry) -> None:
    """Remove an entry's files, its leftover export folders and its lock file (the caller
    holds the lock). A process still running an evicted model keeps it: OpenVINO has read
    the .xml and maps the .bin, and a removed file lives on while it is mapped."""
    for path in entry.files:
        path.unlink(missing_ok=True)
    for scratch in cache_dir.glob(f".{entry.stem}.*"):
        shutil.rmtree(scratch, ignore_errors=True)
    (cache_dir / f"{entry.stem}.lock").unlink(missing_ok=True)


def evict(cache_dir: Path, limit: int | None = None, keep: str | None = None) -> list[str]:
    """Remove least recently used encoders until the cache holds at most `limit` bytes
    (default: CORAL_CACHE_MAX_MB). The entry `keep` (a stem, the one just used) stays even
    when it alone exceeds the cap, and so does any entry another process holds (exporting
    or reading it). Returns the stems removed."""
    limit = cache_limit_bytes() if limit is None else limit
    entries = cache_entries(cache_dir)
    total = sum(entry.size for entry in entries)
    removed = []
    for entry in entries:
        if total <= limit:
            break
        if entry.stem == keep:
            continue
        with _entry_lock(cache_dir, entry.stem, wait=False) as locked:
            if locked:
                _remove(cache_dir, entry)
                total -= entry.size
                removed.append(entry.stem)
    if removed:
        log.info("OpenVINO cache over %.0f MiB: removed %d least recently used encoder(s)",
                 limit / MIB, len(removed))  # fmt: skip
    return removed


def clear_cache(cache_dir: Path | None = None) -> tuple[int, int]:
    """Remove every cached encoder (waiting for any export in progress); returns (entries,
    bytes) removed. Files of other names in the folder are left alone."""
    cache_dir = cache_dir or default_cache_dir()
    entries = {entry.stem: entry for entry in cache_entries(cache_dir)}
    # lock files and export folders without model files: an export that was killed
    stems = set(entries)
    if cache_dir.is_dir():
        stems |= {p.stem for p in cache_dir.glob(f"{ENTRY_PREFIX}*.lock")}
        stems |= {p.name[1:].split(".")[0] for p in cache_dir.glob(f".{ENTRY_PREFIX}*")}
    for stem in stems:
        with _entry_lock(cache_dir, stem) as locked:
            if locked:
                _remove(cache_dir, entries.get(stem, CacheEntry(stem, (), 0, 0.0)))
    return len(entries), sum(entry.size for entry in entries.values())


def _mark_used(path: Path) -> None:
    try:
        os.utime(path)  # the access time of least-recently-used eviction
    except OSError:  # a read-only cache shared by several users: still usable
        log.debug("could not update the time of %s", path)


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


def _read_or_export(core, encoder: nn.Module, cache_dir: Path, limit: int):
    """The OpenVINO model of `encoder`, read from the cache or exported into it; then the
    cache is brought under `limit` bytes."""
    import openvino as ov

    stem = f"{ENTRY_PREFIX}{weights_key(encoder)}"
    cached = cache_dir / f"{stem}.xml"
    cache_dir.mkdir(parents=True, exist_ok=True)
    with _entry_lock(cache_dir, stem):
        if cached.is_file():
            model = core.read_model(str(cached))
        else:
            log.info("Exporting the SAM image encoder for OpenVINO (once; cached in %s)", cache_dir)
            # named after the entry, so that eviction and --clear-cache find a killed one
            with tempfile.TemporaryDirectory(dir=cache_dir, prefix=f".{stem}.") as scratch:
                onnx_file = Path(scratch) / "encoder.onnx"
                _export(encoder, onnx_file)
                model = core.read_model(str(onnx_file))
                # fp32 weights as exported: fp16 compression would change the outputs
                partial = Path(scratch) / cached.name
                ov.save_model(model, str(partial), compress_to_fp16=False)
                partial.with_suffix(".bin").replace(cached.with_suffix(".bin"))
                partial.replace(cached)  # the .xml last: its presence means both are whole
        _mark_used(cached)
    evict(cache_dir, limit, keep=stem)
    return model


def compile_image_encoder(
    encoder: nn.Module,
    threads: int | None = None,
    cache_dir: Path | None = None,
    precision: str = "f32",
    cache: bool | None = None,
) -> OpenVINOImageEncoder:
    """The encoder compiled by OpenVINO for the CPU on `threads` threads (default: torch's).

    precision: 'f32' (default on every CPU) or 'bf16' (faster where the CPU has bf16;
    elsewhere f32, with a warning).
    cache: keep the OpenVINO model under cache_dir (default: CORAL_CACHE_DIR), keyed by
    the weights' hash; None caches unless the weights are random (no SAM checkpoint:
    models/coralscop.py marks them), which are exported to a temporary folder instead."""
    import openvino as ov

    from .coralscop import has_random_weights
    from .cpu_precision import choose_cpu_precision

    if precision not in PRECISIONS:
        raise ValueError(f"OpenVINO precision {precision!r}: use one of {PRECISIONS}")
    precision = choose_cpu_precision(precision, "precision").used
    threads = threads or torch.get_num_threads()
    cache = not has_random_weights(encoder) if cache is None else cache
    core = ov.Core()
    if cache:
        limit = cache_limit_bytes()  # a wrong CORAL_CACHE_MAX_MB fails before the export
        model = _read_or_export(core, encoder, cache_dir or default_cache_dir(), limit)
    else:
        log.info("Exporting the SAM image encoder for OpenVINO (random weights: not cached)")
        with tempfile.TemporaryDirectory(prefix="coral-openvino-") as scratch:
            onnx_file = Path(scratch) / "encoder.onnx"
            _export(encoder, onnx_file)
            model = core.read_model(str(onnx_file))  # read whole: the folder can go
    config = {"INFERENCE_NUM_THREADS": threads, "INFERENCE_PRECISION_HINT": precision}
    compiled = core.compile_model(model, "CPU", config)
    return OpenVINOImageEncoder(compiled, encoder.img_size)


def main(argv: list[str] | None = None) -> int:
    """List the OpenVINO encoder cache, or empty it with --clear-cache."""
    parser = argparse.ArgumentParser(
        prog="python -m models.sam_openvino",
        description="The cache of SAM image encoders exported for OpenVINO "
        f"({CACHE_VARIABLE}, default ~/.cache/coral-toolkit; capped by {CACHE_LIMIT_VARIABLE}, "
        f"default {DEFAULT_CACHE_LIMIT_MB:.0f} MiB, least recently used removed first).",
    )
    parser.add_argument("--clear-cache", action="store_true", help="remove every cached encoder")
    parser.add_argument("--cache-dir", type=Path, help=f"default: {default_cache_dir()}")
    args = parser.parse_args(argv)
    cache_dir = args.cache_dir or default_cache_dir()
    if args.clear_cache:
        count, size = clear_cache(cache_dir)
        print(f"Removed {count} cached encoder(s), {size / MIB:.1f} MiB, from {cache_dir}")
        return 0
    entries = cache_entries(cache_dir)
    for entry in reversed(entries):  # most recently used first
        used = time.strftime("%Y-%m-%d %H:%M", time.localtime(entry.last_used))
        print(f"{entry.stem}  {entry.size / MIB:8.1f} MiB  last used {used}")
    total = sum(entry.size for entry in entries)
    print(f"{len(entries)} cached encoder(s), {total / MIB:.1f} MiB of "
          f"{cache_limit_bytes() / MIB:.0f} MiB, in {cache_dir}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
