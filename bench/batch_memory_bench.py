"""Peak host memory of inference_with_coralscop.py over batches of growing size.

    python bench/batch_memory_bench.py                                # 2, 10, 40 quadrats, 1920 px
    python bench/batch_memory_bench.py --sizes 1,2 --image-size 96    # smoke setting
    python bench/batch_memory_bench.py --checkout /tmp/other-checkout # another version's CLI

Target: peak memory does not grow with the number of images, `--to-fiftyone`
included (a survey is hundreds of quadrats; a few MB kept per instance mask ran
a few hundred out of memory). Each run is the real command in a fresh process
on synthetic 1920 px reef quadrats (dataset/reef_demo.py, JPEG), with the tiny
semantic config and a tiny random SAM on a light prompt grid: the models are
small, but the images, probabilities, proposals and instance masks are full
size, which is where memory goes. The peak resident set of each run comes from
the kernel (`os.wait4`'s ru_maxrss of that process alone, reported by a small
process that starts it; FiftyOne's database server is a process of its own and
is not counted). Verdict per mode: "flat" when the
largest peak is within 10 % of the smallest. Prints a table and one JSON line.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import cv2  # noqa: E402
import fire  # noqa: E402

from dataset.reef_demo import render_sample  # noqa: E402
from models.random_checkpoint import write_random_semantic_checkpoint  # noqa: E402

TINY_CONFIG = "configs/reef_demo_tiny.py"
FLAT_WITHIN = 0.10
# The command as users run it, with the tiny SAM swapped in (its ViT-B would take
# minutes per image on a CPU); the checkout's own code is imported.
LAUNCHER = """
import sys
sys.path.insert(0, sys.argv[1])
from models import coralscop
coralscop.SAM_VIT_B = coralscop.SAM_TINY
import inference_with_coralscop as cli
sys.exit(cli.main(sys.argv[2:]))
"""


def _write_quadrats(folder: Path, count: int, size: int) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for index in range(count):
        image, _ = render_sample(index, size)
        path = folder / f"quadrat_{index:03d}.jpg"
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        if not cv2.imwrite(str(path), bgr, [cv2.IMWRITE_JPEG_QUALITY, 95]):
            raise OSError(f"could not write {path}")
        paths.append(path)
    return paths


def _batch_folder(folder: Path, quadrats: list[Path]) -> Path:
    """A folder with the first quadrats, as links (no copies of 1920 px images)."""
    folder.mkdir(parents=True)
    for path in quadrats:
        (folder / path.name).symlink_to(path)
    return folder


# A small process starts each run and reports that run's peak from wait4. Started
# from this one directly, a run would inherit this process's resident set as its
# peak: Linux carries the peak of the memory a child is forked (or vforked) with
# over its exec, and this process holds torch and a model.
REPORTER = """
import os, subprocess, sys
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
with open(sys.argv[1], "w") as report:
    report.write(str(usage.ru_maxrss))
sys.exit(os.waitstatus_to_exitcode(status))
"""


def peak_rss_of(command: list[str], env: dict, cwd: Path) -> tuple[int, float, str]:
    """Run a command; its peak RSS in MiB (the kernel's, of that process alone), wall
    seconds and stderr. Raises with the end of stderr when it fails."""
    with tempfile.TemporaryDirectory() as folder:
        report = Path(folder) / "maxrss"
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-c", REPORTER, str(report), *command],
            cwd=cwd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        )  # fmt: skip
        seconds = time.perf_counter() - started
        stderr = done.stderr.decode(errors="replace")
        if done.returncode != 0:
            raise RuntimeError(f"{command[-12:]} exited {done.returncode}:\n{stderr[-3000:]}")
        return round(int(report.read_text()) / 1024), seconds, stderr


def main(
    sizes: str | int | tuple = "2,10,40",
    image_size: int = 1920,
    points_per_side: int = 4,
    fiftyone: str = "both",
    checkout: str | None = None,
    keep: bool = False,
) -> dict:
    """sizes: batch sizes; fiftyone: both, with or without; checkout: whose CLI to run."""
    # fire gives "2,10,40" as a tuple, "40" as an int; a caller may pass "2,10,40"
    sizes = [int(s) for s in str(sizes).strip("()[] ").split(",") if s.strip()]
    checkout = Path(checkout or ROOT).resolve()
    modes = {"both": (False, True), "with": (True,), "without": (False,)}[fiftyone]
    workdir = Path(tempfile.mkdtemp(prefix="batch-memory-bench-"))
    rows = []
    try:
        weights = write_random_semantic_checkpoint(checkout / TINY_CONFIG, workdir / "random.pth")
        quadrats = _write_quadrats(workdir / "quadrats", max(sizes), image_size)
        for to_fiftyone in modes:
            for count in sizes:
                tag = f"{count}{'-fo' if to_fiftyone else ''}"
                inputs = _batch_folder(workdir / f"in-{tag}", quadrats[:count])
                args = [
                    "--input-dir", str(inputs), "--output-dir", str(workdir / f"out-{tag}"),
                    "--segformer-config", str(checkout / TINY_CONFIG),
                    "--segformer-weights", str(weights), "--device", "cpu",
                    "--points-per-side", str(points_per_side), "--crop-n-layers", "0",
                ]  # fmt: skip
                if to_fiftyone:
                    args += ["--to-fiftyone", f"batch_memory_bench_{tag}"]
                env = dict(
                    os.environ,
                    # a throw-away database per run: the user's FiftyOne is never touched
                    FIFTYONE_DATABASE_DIR=str(workdir / f"fiftyone-{tag}"),
                    FIFTYONE_DO_NOT_TRACK="true",
                    CORAL_ENV_FILE=os.devnull,
                )
                command = [sys.executable, "-c", LAUNCHER, str(checkout), *args]
                peak, seconds, _ = peak_rss_of(command, env, checkout)
                rows.append(dict(to_fiftyone=to_fiftyone, images=count, peak_rss_mib=peak,
                                 seconds=round(seconds, 1)))  # fmt: skip
                mode = "with" if to_fiftyone else "without"
                print(f"  {mode:7} --to-fiftyone, {count:3d} images: peak RSS {peak:6d} MiB, "
                      f"{seconds:6.1f} s", flush=True)  # fmt: skip
    finally:
        if keep:
            print(f"kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    verdicts = {}
    for to_fiftyone in modes:
        peaks = [r["peak_rss_mib"] for r in rows if r["to_fiftyone"] == to_fiftyone]
        growth = max(peaks) / min(peaks) - 1
        verdicts["with_fiftyone" if to_fiftyone else "without_fiftyone"] = dict(
            growth=round(growth, 3), flat=growth <= FLAT_WITHIN
        )
    figures = dict(benchmark="batch_memory", image_size=image_size, sizes=sizes,
                   points_per_side=points_per_side, checkout=str(checkout), rows=rows,
                   verdicts=verdicts)  # fmt: skip
    print(f"\npeak RSS of inference_with_coralscop.py, {image_size} px quadrats, tiny models, CPU")
    print(f"  {'--to-fiftyone':14}" + "".join(f"{n:>9} img" for n in sizes) + "   verdict")
    for to_fiftyone in modes:
        peaks = [r["peak_rss_mib"] for r in rows if r["to_fiftyone"] == to_fiftyone]
        verdict = verdicts["with_fiftyone" if to_fiftyone else "without_fiftyone"]
        word = "flat" if verdict["flat"] else "GROWS"
        print(f"  {'with' if to_fiftyone else 'without':14}"
              + "".join(f"{p:>9} MiB" for p in peaks)
              + f"   {word} (+{verdict['growth']:.0%} from smallest to largest)")  # fmt: skip
    print(json.dumps(figures))
    return figures


if __name__ == "__main__":
    fire.Fire(main, serialize=lambda _: None)
