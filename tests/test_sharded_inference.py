"""inference_with_coralscop.py sharded over processes (torchrun, gloo on CPU).

The same input folder (tiny quadrats of three sizes and a truncated JPEG) goes
through one process and through two; the results must be the same files. Then the
faults of a sharded run: a process that fails (its models do not load, as on a
GPU out of memory) and a process killed mid-batch (as by the OOM killer). In both,
what was finished is kept, the rest is named, and a rerun with one process does
exactly the missing images and ends with the one-process result.

Every process runs on one thread (torchrun's default), the one-process reference
too: float sums over another thread count differ in the last digit of a score.
The models are the tests' usual ones: the tiny semantic config with random weights
and a tiny random SAM, swapped in by a launcher script.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch
from PIL import Image

from dataset.inference_outputs import OutputFolder
from dataset.sharding import partition, pixel_count

ROOT = Path(__file__).resolve().parents[1]
LAUNCHER = """
import os, sys
sys.path.insert(0, {root!r})
from models import coralscop
coralscop.SAM_VIT_B = coralscop.SAM_TINY  # ViT-B would take minutes per image here
import inference_with_coralscop as cli
from engine import batch_inference
failing = os.environ.get("TEST_FAILING_RANK")
if failing is not None and os.environ.get("RANK") == failing:
    class Unloadable(batch_inference.TwoStageInferencer):
        def __init__(self, *args, **kwargs):
            raise RuntimeError("CUDA out of memory (simulated)")
    batch_inference.TwoStageInferencer = Unloadable
sys.exit(cli.main(sys.argv[1:]))
"""
LIGHT = ["--device", "cpu", "--points-per-side", "2", "--crop-n-layers", "0",
         "--score-threshold", "0", "--min-threshold", "0.0", "--min-area", "1"]  # fmt: skip
TRUNCATED = "truncated.jpg"
SIZES = (64, 96, 128)


def test_partition_balances_pixels_not_image_counts():
    # one large image and many small ones: counting images would put half of them with it
    assert partition([100, 1, 1, 1, 1, 1, 1], 2) == [[0], [1, 2, 3, 4, 5, 6]]
    rng = np.random.default_rng(0)
    weights = [int(w) for w in rng.integers(1, 10_000, 200)]
    shares = partition(weights, 3)
    assert sorted(i for share in shares for i in share) == list(range(200)), "each image once"
    loads = [sum(weights[i] for i in share) for share in shares]
    assert max(loads) - min(loads) <= max(weights)
    assert partition(weights, 3) == shares, "every process computes the same split"
    assert partition([5, 5], 4) == [[0], [1], [], []]
    with pytest.raises(ValueError):
        partition([1], 0)


def test_pixel_count_reads_the_header_only(tmp_path):
    mosaic = tmp_path / "mosaic.png"
    Image.new("1", (20000, 15000)).save(mosaic)  # 300 MP in a few kB
    assert pixel_count(mosaic) == 300_000_000
    (tmp_path / "notes.jpg").write_text("not a picture")
    assert pixel_count(tmp_path / "notes.jpg") == 0, "named as failed when processed"


def test_process_logs_merge_in_time_order_with_their_tracebacks(tmp_path):
    out = OutputFolder(tmp_path / "out", {"run": 1})
    out.log_file.write_text("2026-01-01 10:00:00,000 INFO an earlier run\n")
    out.process_log(0).write_text(
        "2026-01-01 11:00:00,100 [0/2] INFO a.jpg: done\n"
        "2026-01-01 11:00:02,000 [0/2] ERROR This process failed\n"
        "Traceback (most recent call last):\n  RuntimeError: boom\n"
    )
    out.process_log(1).write_text(
        "2026-01-01 11:00:00,050 [1/2] INFO b.jpg: done\n"
        "2026-01-01 11:00:01,000 [1/2] INFO c.jpg: done\n"
    )
    assert out.merge_process_logs() == 2
    assert out.log_file.read_text().splitlines() == [
        "2026-01-01 10:00:00,000 INFO an earlier run",
        "2026-01-01 11:00:00,050 [1/2] INFO b.jpg: done",
        "2026-01-01 11:00:00,100 [0/2] INFO a.jpg: done",
        "2026-01-01 11:00:01,000 [1/2] INFO c.jpg: done",
        "2026-01-01 11:00:02,000 [0/2] ERROR This process failed",
        "Traceback (most recent call last):",
        "  RuntimeError: boom",
    ]
    assert not (out.root / ".process_logs").exists()
    out.close()


@pytest.mark.skipif(torch.cuda.is_available(), reason="on GPUs mmengine starts the launchers")
def test_a_launcher_that_cannot_start_here_stops_before_anything(tmp_path, monkeypatch, capsys):
    import inference_with_coralscop as cli

    monkeypatch.delenv("RANK", raising=False)
    args = ["--input-dir", str(tmp_path), "--output-dir", str(tmp_path / "out"),
            "--segformer-config", "c.py", "--segformer-weights", "w.pth"]  # fmt: skip
    assert cli.main([*args, "--launcher", "slurm"]) == 2
    assert "--launcher slurm needs GPUs; on CPU use torchrun" in capsys.readouterr().err
    assert cli.main([*args, "--launcher", "pytorch"]) == 2
    assert "start the command with torchrun" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _write_inputs(folder: Path) -> list[str]:
    from dataset.reef_demo import render_sample

    folder.mkdir()
    for index in range(8):
        image, _ = render_sample(index, SIZES[index % 3])
        bgr = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
        assert cv2.imwrite(str(folder / f"quadrat_{index:02d}.jpg"), bgr)
    full = io.BytesIO()
    image, _ = render_sample(9, 96)
    Image.fromarray(image).save(full, "JPEG", quality=95)
    (folder / TRUNCATED).write_bytes(full.getvalue()[: len(full.getvalue()) // 3])
    return sorted(p.name for p in folder.iterdir())


def _command(setup: dict, out: Path, processes: int) -> list[str]:
    args = ["--input-dir", str(setup["inputs"]), "--output-dir", str(out),
            "--segformer-config", str(ROOT / "configs/reef_demo_tiny.py"),
            "--segformer-weights", str(setup["checkpoint"]), "--save-semantic", *LIGHT]  # fmt: skip
    if processes == 1:
        return [sys.executable, str(setup["launcher"]), *args]
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
            str(processes), str(setup["launcher"]), *args, "--launcher", "pytorch"]  # fmt: skip


def _env(**extra: str) -> dict:
    # OpenVINO's encoder cache is not what these tests are about: the PyTorch encoder
    return {**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1",
            "CORAL_SAM_ENCODER_RUNTIME": "torch", **extra}  # fmt: skip


def _run(setup: dict, out: Path, processes: int, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(_command(setup, out, processes), cwd=ROOT, env=_env(**env),
                          capture_output=True, text=True, timeout=600)  # fmt: skip


@pytest.fixture(scope="module")
def setup(tmp_path_factory, random_semantic_checkpoint):
    tmp = tmp_path_factory.mktemp("sharded")
    launcher = tmp / "launcher.py"
    launcher.write_text(LAUNCHER.format(root=str(ROOT)))
    names = _write_inputs(tmp / "in")
    setup = dict(tmp=tmp, inputs=tmp / "in", names=names, launcher=launcher,
                 checkpoint=random_semantic_checkpoint)  # fmt: skip
    runs = {}
    for processes in (1, 2):
        out = tmp / f"out_{processes}"
        runs[processes] = dict(out=out, run=_run(setup, out, processes))
    setup["runs"] = runs
    return setup


def _outputs(out: Path) -> dict[str, str]:
    """Every per-image file (masks, visualizations, semantic maps) with its digest."""
    return {
        str(path.relative_to(out)): hashlib.sha256(path.read_bytes()).hexdigest()
        for folder in ("masks", "visualizations", "semantic")
        for path in sorted((out / folder).rglob("*"))
        if path.is_file()
    }


def _predictions(out: Path) -> dict:
    document = json.loads((out / "predictions.json").read_text())
    document["images"].sort(key=lambda image: image["file_name"])
    names = {image["id"]: image["file_name"] for image in document["images"]}
    document["annotations"].sort(key=lambda a: (names[a["image_id"]], a["id"]))
    return document


def _processed(log: str) -> dict[str, str]:
    """file name -> the process tag of the line that reports it done ('' in one process)."""
    found = re.findall(r"^\S+ \S+ (\[\d+/\d+\] )?INFO (\S+\.jpg): \d+ instances", log, re.M)
    return {name: tag.strip() for tag, name in found}


def test_two_processes_write_what_one_process_writes(setup):
    one, two = setup["runs"][1], setup["runs"][2]
    for run in (one, two):
        assert run["run"].returncode == 1, run["run"].stderr[-3000:]  # the truncated JPEG
    assert _predictions(two["out"]) == _predictions(one["out"])
    assert [i["file_name"] for i in _predictions(two["out"])["images"]] == [
        n for n in setup["names"] if n != TRUNCATED
    ]
    outputs = _outputs(one["out"])
    assert len([k for k in outputs if k.startswith("visualizations/")]) == 8
    assert _outputs(two["out"]) == outputs
    assert not (two["out"] / ".process_logs").exists(), "one log, merged"


def test_each_process_does_its_share_once_and_the_log_says_so(setup):
    log = (setup["runs"][2]["out"] / "inference_log.txt").read_text()
    processed = _processed(log)
    good = [n for n in setup["names"] if n != TRUNCATED]
    assert sorted(processed) == good and len(re.findall(r"INFO \S+\.jpg: \d+ instances", log)) == 8
    assert set(processed.values()) == {"[0/2]", "[1/2]"}, "both processes worked"
    # the shares are balanced by pixels, as computed from the headers here
    pixels = {n: pixel_count(setup["inputs"] / n) for n in setup["names"]}
    loads = {tag: sum(pixels[n] for n, t in processed.items() if t == tag) for tag in ("[0/2]",
             "[1/2]")}  # fmt: skip
    failed_in = re.search(r"(\[\d/2\]) ERROR truncated\.jpg: not done", log).group(1)
    loads[failed_in] += pixels[TRUNCATED]
    assert abs(loads["[0/2]"] - loads["[1/2]"]) <= max(pixels.values())
    stamps = [line[:23] for line in log.splitlines() if re.match(r"\d{4}-", line)]
    assert stamps == sorted(stamps), "one log in time order"
    assert "9 images in" in log and "0 already done, 9 to process on 2 processes" in log
    assert f"Not done: {TRUNCATED}" in log and "1 of 9 images failed" in log


def _done(out: Path) -> set[str]:
    folder = out / ".per_image"
    return {p.stem for p in folder.glob("*.json")} if folder.is_dir() else set()


def _resume_with_one_process(setup: dict, out: Path, finished: set[str]) -> str:
    """Rerun on one process; returns the rerun's part of the log after checking it did
    exactly the missing images and ended where the one-process run did."""
    before = (out / "inference_log.txt").read_text() if (out / "inference_log.txt").exists() else ""
    rerun = _run(setup, out, 1)
    assert rerun.returncode == 1, rerun.stderr[-3000:]  # the truncated JPEG, again
    log = (out / "inference_log.txt").read_text()[len(before) :]
    missing = {Path(n).stem for n in setup["names"]} - finished
    assert f"{len(finished)} already done, {len(missing)} to process" in log
    # (a killed run's process logs come first, merged by the rerun: their lines are tagged)
    redone = {Path(name).stem for name, tag in _processed(log).items() if not tag}
    assert redone == missing - {Path(TRUNCATED).stem}
    assert _predictions(out) == _predictions(setup["runs"][1]["out"])
    assert _outputs(out) == _outputs(setup["runs"][1]["out"])
    return log


def test_a_failing_process_has_its_images_named_and_a_rerun_does_them(setup):
    out = setup["tmp"] / "out_failing"
    run = _run(setup, out, 2, TEST_FAILING_RANK="1")
    assert run.returncode != 0
    log = (out / "inference_log.txt").read_text()
    assert "[1/2] ERROR This process failed: RuntimeError: CUDA out of memory" in log
    processed = _processed(log)
    assert processed and set(processed.values()) == {"[0/2]"}, "process 0 did its share"
    named = set(re.findall(r"\[1/2\] ERROR (\S+\.jpg): not done: its process failed", log))
    assert named and not named & set(processed)
    summary = re.search(r"ERROR Not done: (.*)", log).group(1).split(", ")
    assert set(summary) >= named and len(summary) == len(setup["names"]) - len(processed)
    # not marked done, so a rerun does them (as after the killed run below)
    assert _done(out) == {Path(n).stem for n in processed}
    assert sorted(i["file_name"] for i in _predictions(out)["images"]) == sorted(processed)


def _worker(agent: int, rank: int) -> int | None:
    """The pid of torchrun's worker process of that rank (read from /proc)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            environ = (entry / "environ").read_bytes().split(b"\0")
        except OSError:
            continue
        if f"PPid:\t{agent}\n" in status and f"RANK={rank}".encode() in environ:
            return int(entry.name)
    return None


def test_a_killed_sharded_run_resumes_with_one_process(setup):
    out = setup["tmp"] / "out_killed"
    agent = subprocess.Popen(_command(setup, out, 2), cwd=ROOT, env=_env(),
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    try:
        deadline = time.monotonic() + 300
        while len(_done(out)) < 2:
            assert agent.poll() is None and time.monotonic() < deadline, "no progress"
            time.sleep(0.02)
        worker = _worker(agent.pid, 1)
        assert worker is not None
        os.kill(worker, signal.SIGKILL)  # as the OOM killer would; torchrun ends the other
        assert agent.wait(timeout=120) != 0
    finally:
        agent.kill()
        agent.wait()
    finished = _done(out)
    assert 2 <= len(finished) < 8, "killed mid-batch"
    assert not (out / "predictions.json").exists(), "written only at the end of a run"
    _resume_with_one_process(setup, out, finished)
    log = (out / "inference_log.txt").read_text()
    killed = {name for name, tag in _processed(log).items() if tag}
    assert {Path(n).stem for n in killed} == finished, "the killed processes' logs are kept"
    assert not (out / ".process_logs").exists()
    leftovers = [p for p in out.rglob("*") if ".tmp-" in p.name or p.name.endswith(".partial")]
    assert leftovers == []
