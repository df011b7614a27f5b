"""test.py on two CPU processes (torchrun, gloo) gives the metrics of one process.

mmengine gives each process part of the split and gathers the metric's state (here
the per-image confusion matrices) on the main process; its distributed sampler pads
the split to a multiple of the process count with repeated images and the gather
cuts them off again. The val split gets a third image so that padding happens.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _test_py(config: str, checkpoint: Path, work_dir: Path, processes: int):
    launcher = (
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
         str(processes), "test.py"]
        if processes > 1
        else [sys.executable, "test.py"]
    )  # fmt: skip
    extra = ["--launcher", "pytorch"] if processes > 1 else []
    result = subprocess.run(
        [*launcher, config, str(checkpoint), "--work-dir", str(work_dir), *extra],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
        env={**os.environ, "PYTHONWARNINGS": "ignore", "OMP_NUM_THREADS": "1"},
    )  # fmt: skip
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]


@pytest.fixture(scope="module")
def evaluated(prepared, random_semantic_checkpoint):
    data = prepared["tmp"] / "three_val"
    shutil.copytree(prepared["fine"], data)
    source = sorted((data / "images" / "train").iterdir())[0]
    shutil.copy(source, data / "images" / "val" / source.name)
    mask = f"{source.stem}.png"
    shutil.copy(data / "annotations" / "train" / mask, data / "annotations" / "val" / mask)
    config = prepared["tmp"] / "three_val.py"
    text = Path(prepared["configs"]["fine"]).read_text()
    config.write_text(text.replace(str(prepared["fine"]), str(data)))
    runs = {}
    for processes in (1, 2):
        work_dir = prepared["tmp"] / f"eval_{processes}_processes"
        _test_py(str(config), random_semantic_checkpoint, work_dir, processes)
        runs[processes] = dict(work_dir=work_dir)
    return dict(runs=runs, data=data)


def test_two_processes_evaluate_every_image_once(evaluated):
    log = next(evaluated["runs"][2]["work_dir"].rglob("*.log")).read_text()
    assert "Distributed training: True" in log and "GPU number: 2" in log  # mmengine's words
    pred = evaluated["runs"][2]["work_dir"] / "pred"
    masks = sorted(p.name for p in (evaluated["data"] / "annotations" / "val").iterdir())
    assert len(masks) == 3 and sorted(p.name for p in pred.iterdir()) == masks


def test_two_processes_give_the_metrics_of_one(evaluated):
    one, two = (json.loads((evaluated["runs"][n]["work_dir"] / "metrics.json").read_text())
                for n in (1, 2))  # fmt: skip
    assert one == two
    matrices = [
        (evaluated["runs"][n]["work_dir"] / "confusion_matrix.csv").read_text() for n in (1, 2)
    ]
    assert matrices[0] == matrices[1]
    # the matrix counts each labelled pixel of the three images once: no padded repeat
    rows = [line.split(",")[1:] for line in matrices[1].splitlines()[1:]]
    labelled = sum(
        int((cv2.imread(str(p), cv2.IMREAD_UNCHANGED) != 255).sum())
        for p in (evaluated["data"] / "annotations" / "val").iterdir()
    )
    assert np.array(rows, dtype=np.int64).sum() == labelled
    # a random model still predicts several classes, so equal metrics are no accident
    assert sum(v["IoU"] is not None for v in two["per_class"].values()) >= 2
    for n in (1, 2):
        pred = evaluated["runs"][n]["work_dir"] / "pred"
        assert len(list(pred.iterdir())) == 3
    for name in os.listdir(evaluated["runs"][1]["work_dir"] / "pred"):
        maps = [cv2.imread(str(evaluated["runs"][n]["work_dir"] / "pred" / name), 0)
                for n in (1, 2)]  # fmt: skip
        assert np.array_equal(*maps), name


@pytest.mark.skipif(torch.cuda.is_available(), reason="on GPUs mmengine starts the launchers")
def test_a_launcher_that_cannot_start_here_is_named(prepared, random_semantic_checkpoint):
    config = prepared["configs"]["fine"]
    commands = (["test.py", config, str(random_semantic_checkpoint)], ["train.py", config])
    for command in commands:
        for launcher, message in (
            ("slurm", "--launcher slurm needs GPUs; on CPU use torchrun with --launcher pytorch"),
            ("pytorch", "--launcher pytorch: start the command with torchrun"),
        ):
            env = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE")}
            result = subprocess.run(
                [sys.executable, *command, "--launcher", launcher],
                cwd=ROOT, capture_output=True, text=True, timeout=300, env=env,
            )  # fmt: skip
            assert result.returncode == 1 and message in result.stderr, result.stderr[-2000:]
            assert "Traceback" not in result.stderr, command
