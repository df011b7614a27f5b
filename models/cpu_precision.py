"""The CPU precision of inference: f32 (the default) or bf16, where the CPU has it.

CPUs with native bf16 arithmetic (Intel with AVX512_BF16 or AMX, AMD Zen 4 and later) run
the SAM image encoder and the semantic model several times faster in bf16
(bench/RESULTS.md). Elsewhere bf16 is emulated: slower than f32 and still rounded, so a
request for it is answered with a warning and f32, never silently.

The setting: `--cpu-precision` (inference_with_coralscop.py) or CORAL_CPU_PRECISION
(the CVAT function's env; the CLI reads it when the flag is absent). GPUs are not
affected: they run bf16 where they support it, as before.

Detection reads the CPU flags of /proc/cpuinfo (Linux), not OpenVINO's capability
report: OpenVINO also reports bf16 when oneDNN is limited below it
(ONEDNN_MAX_CPU_ISA=AVX2), then fails to compile, and with AVX512_CORE_VNNI it compiles
and emulates. So a oneDNN limit below AVX512_CORE_BF16 counts as no bf16 too.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

VARIABLE = "CORAL_CPU_PRECISION"
PRECISIONS = ("f32", "bf16")
DEFAULT = "f32"
# either is native bf16 arithmetic (dot products of bf16 pairs into f32) for oneDNN
BF16_FLAGS = ("avx512_bf16", "amx_bf16")
CPUINFO = Path("/proc/cpuinfo")
ISA_VARIABLES = ("ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA")  # oneDNN's name, then its old one
# oneDNN ISA limits that leave out its bf16 kernels (it emulates bf16 under them, or fails)
ISAS_WITHOUT_BF16 = frozenset(
    {"SSE41", "AVX", "AVX2", "AVX2_VNNI", "AVX2_VNNI_2", "AVX512_CORE", "AVX512_CORE_VNNI",
     "AVX512_MIC", "AVX512_MIC_4OPS"}
)  # fmt: skip


def parse_cpu_flags(cpuinfo: str) -> frozenset[str]:
    """The flags of an x86 /proc/cpuinfo text (its `flags` lines; every core lists them)."""
    flags: set[str] = set()
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags":
            flags.update(value.split())
    return frozenset(flags)


def read_cpu_flags(path: Path = CPUINFO) -> frozenset[str] | None:
    """This machine's CPU flags; None where they cannot be read (not Linux)."""
    try:
        return parse_cpu_flags(path.read_text(errors="replace"))
    except OSError:
        return None


def missing_bf16(
    flags: Iterable[str] | None, environ: Mapping[str, str] | None = None
) -> str | None:
    """None when the CPU runs bf16 natively, else why not, in words for the log."""
    if flags is None:
        return (
            f"the CPU's flags cannot be read ({CPUINFO} is absent: not Linux), so its bf16 "
            "support is unknown"
        )
    flags = set(flags)
    if not flags & set(BF16_FLAGS):
        return f"this CPU lacks the flags {' and '.join(BF16_FLAGS)} (native bf16)"
    environ = os.environ if environ is None else environ
    for name in ISA_VARIABLES:
        limit = environ.get(name, "").strip().upper()
        if limit in ISAS_WITHOUT_BF16:
            return f"{name}={limit} keeps oneDNN below AVX512_CORE_BF16 (its bf16 kernels)"
    return None


def requested_precision(value: str | None = None, source: str = VARIABLE) -> str:
    """The precision asked for: `value`, else CORAL_CPU_PRECISION, else f32. A value that is
    neither f32 nor bf16 is a ValueError naming `source` (where it came from)."""
    if value is None:
        value, source = os.environ.get(VARIABLE, ""), VARIABLE
    cleaned = value.strip().lower() or DEFAULT
    if cleaned not in PRECISIONS:
        raise ValueError(f"{source}={value!r}: use f32 (default) or bf16")
    return cleaned


@dataclass(frozen=True)
class CpuPrecision:
    """What was asked for, what runs, and why they differ (empty when they do not)."""

    requested: str
    used: str
    reason: str = ""


def choose_cpu_precision(value: str | None = None, source: str = VARIABLE) -> CpuPrecision:
    """The precision to run on this CPU: the request (see requested_precision), or f32 with
    a warning when bf16 is asked for and the CPU would only emulate it.

    Falls back rather than refusing: the same command line or function bundle may run on
    servers of several generations, and f32 gives the same model's answers."""
    requested = requested_precision(value, source)
    if requested == "f32":
        return CpuPrecision(requested, "f32")
    absent = missing_bf16(read_cpu_flags())
    if absent is None:
        return CpuPrecision(requested, "bf16")
    reason = f"bf16 was asked for, but {absent}: running in f32 instead (bf16 would be emulated)"
    log.warning(reason)
    return CpuPrecision(requested, "f32", reason)


def cores_given() -> int:
    """The CPU cores this process may use: its affinity, capped by a cgroup v2 quota
    (a container started with --cpus=2 on a 64-core host sees 64 in os.cpu_count())."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    try:
        quota, period = Path("/sys/fs/cgroup/cpu.max").read_text().split()
        if quota != "max":
            cores = min(cores, max(1, -(-int(quota) // int(period))))
    except (OSError, ValueError):
        pass  # no cgroup v2 quota readable: the affinity is the limit
    return max(1, cores or 1)


def function_device(logger) -> tuple[str, bool | None]:
    """A CVAT function's device and bf16 setting (nuclio/main.py and nuclio/interactor/):
    cuda:0 where there is a GPU (bf16 None: wherever the GPU supports it); else the CPU,
    one torch thread per core the container is given (more only contend), in
    CORAL_CPU_PRECISION checked against this CPU (a warning and f32 where bf16 is asked
    for and missing). logger: Nuclio's context.logger."""
    import torch

    if torch.cuda.is_available():
        return "cuda:0", None
    torch.set_num_threads(cores_given())
    precision = choose_cpu_precision()
    if precision.reason:
        logger.warn(f"CORAL_CPU_PRECISION: {precision.reason}")
    logger.info(f"CPU: {torch.get_num_threads()} threads, {precision.used}")
    return "cpu", precision.used == "bf16"
