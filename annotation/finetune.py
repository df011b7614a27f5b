"""Training and evaluation of a round, through the project's own commands.

Each round fine-tunes the last model on the prepared dataset with a short schedule:
round_N/finetune.py is a config that inherits the user's config and changes only the
data root, the epochs (a poly decay from the config's learning rate over them), how often
it validates and keeps checkpoints, and, where the config weighs its loss by class, the
weights of the loop's own data. `train.py --load-from` starts from the last round's
weights; `test.py --split test` evaluates on the fixed test split. Both run as child
processes, as a user would run them, so a round holds no model in the loop's process
and an interrupted training resumes (`train.py --resume`) from its last checkpoint.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from pathlib import Path

from annotation.state import LoopError
from dataset.image_io import write_bytes_atomic
from dataset.info import INFO_FILE, read_dataset_info

log = logging.getLogger("annotate")
REPO = Path(__file__).resolve().parents[1]
CONFIG_FILE = "finetune.py"
BEST_LINK = "best_mIoU.pth"


class StepFailedError(RuntimeError):
    """train.py or test.py exited with an error; the message names the log."""


def class_weight_lines(base_config: str, data_root: str) -> str:
    """Config lines that weigh the loss by the loop's own class frequencies, or "".

    A config with `use_class_weights = True` computes its loss weights when it is loaded,
    from the dataset_info.py of its own data_root (none at all where that folder is absent,
    e.g. on another machine). A round trains on the loop's prepared folder, so its weights
    come from there: the rare genera the loop finds weigh as much as they are rare."""
    from mmengine.config import Config

    base = Config.fromfile(base_config)
    if not base.get("use_class_weights", False):
        return ""
    head = base.model.get("decode_head")
    loss = head.get("loss_decode") if isinstance(head, dict) else None
    if not isinstance(loss, dict):
        raise LoopError(
            f"{base_config}: use_class_weights = True, but model.decode_head.loss_decode is "
            "not one loss (a dict): the loop cannot set its class weights; set "
            "use_class_weights = False, or give the head one loss"
        )
    info = Path(data_root) / INFO_FILE
    if not info.is_file():
        raise LoopError(f"{info} is missing: the round's data is not prepared")
    weights = read_dataset_info(info)["class_weights"]
    return f"model = dict(decode_head=dict(loss_decode=dict(class_weight={weights!r})))\n"


def write_finetune_config(folder: Path, base_config: str, data_root: str, epochs: int) -> Path:
    """round_N/finetune.py; see the module."""
    interval = max(1, epochs // 4)
    text = f"""# Written by annotate.py: the user's config, the loop's data, a short schedule.
_base_ = [{str(Path(base_config).resolve())!r}]
data_root = {str(Path(data_root).resolve())!r}
train_dataloader = dict(dataset=dict(data_root=data_root))
val_dataloader = dict(dataset=dict(data_root=data_root))
test_dataloader = dict(dataset=dict(data_root=data_root))
param_scheduler = [
    dict(type="PolyLR", eta_min=0.0, power=0.9, by_epoch=True, begin=0, end={epochs},
         convert_to_iter_based=True),
]
train_cfg = dict(max_epochs={epochs}, val_interval={interval})
default_hooks = dict(checkpoint=dict(interval={interval}, max_keep_ckpts=1))
"""
    text += class_weight_lines(base_config, data_root)
    path = folder / CONFIG_FILE
    write_bytes_atomic(path, text.encode())
    return path


def _run(command: list[str], log_file: Path, what: str) -> None:
    log.info("%s: %s (log: %s)", what, " ".join(command), log_file)
    env = dict(
        os.environ,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
    )
    with open(log_file, "a", encoding="utf-8") as out:
        done = subprocess.run(command, cwd=REPO, stdout=out, stderr=subprocess.STDOUT, env=env)
    if done.returncode:
        tail = "".join(
            log_file.read_text(encoding="utf-8", errors="replace").splitlines(True)[-15:]
        )
        raise StepFailedError(f"{what} failed (exit {done.returncode}); end of {log_file}:\n{tail}")


def train(config: Path, work_dir: Path, load_from: str | None) -> Path:
    """Fine-tune from `load_from` (None: from the config's own start); resumes an
    interrupted run in the same work dir. Returns the best checkpoint."""
    command = [sys.executable, str(REPO / "train.py"), str(config), "--work-dir", str(work_dir)]
    if any(work_dir.glob("epoch_*.pth")):
        command += ["--resume"]
    elif load_from:
        command += ["--load-from", load_from]
    work_dir.mkdir(parents=True, exist_ok=True)
    _run(command, work_dir / "annotate_train.log", "Fine-tuning")
    best = work_dir / BEST_LINK
    if not best.exists():
        raise StepFailedError(f"training ended without {best}: look at {work_dir}")
    return best.resolve()


def evaluate(config: Path, checkpoint: str, work_dir: Path) -> Path:
    """test.py on the test split; returns its metrics.json."""
    work_dir.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, str(REPO / "test.py"), str(config), checkpoint, "--split", "test",
               "--work-dir", str(work_dir)]  # fmt: skip
    _run(command, work_dir / "annotate_test.log", "Evaluation on the test split")
    return work_dir / "metrics.json"
