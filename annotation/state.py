"""The loop's memory: loop.json in the loop folder, one entry per round, one time stamp
per finished step. Every command reads it first, so a step that finished is never done
twice and one that was interrupted starts again where it stopped.

    <loop dir>/loop.json             dataset, label field, config, rounds and their steps
    <loop dir>/round_N/              ranking.csv, sent.json, the CVAT archive, train/, test/
    <loop dir>/rounds.csv, rounds.png

loop.json is rewritten whole under a temporary name and renamed, so a crash leaves the
previous version.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from dataset.image_io import write_bytes_atomic

STATE_FILE = "loop.json"
# the steps of a round, in order; receive's are done one after the other
STEPS = ("ranked", "sent", "received", "prepared", "trained", "tested", "recorded")


class LoopError(RuntimeError):
    """A step asked out of order, or a round already done; the message says what to run."""


@dataclass
class Round:
    number: int
    strategy: str
    budget: int
    seed: int
    checkpoint: str  # the model that ranked and pre-annotated this round
    chosen: list[str] = field(default_factory=list)  # sample ids, in rank order
    steps: dict[str, str] = field(default_factory=dict)  # step -> finished at (ISO time)
    sent_to: str = ""  # the archive path or "cvat:<anno key>"
    new_checkpoint: str = ""  # the fine-tuned model of this round
    received_from: str = ""  # the export file or "cvat:<anno key>"
    edited: int = 0  # images whose shapes people changed
    added: dict[str, int] = field(default_factory=dict)  # split -> images the round added

    @property
    def name(self) -> str:
        return f"round_{self.number}"

    def done(self, step: str) -> bool:
        return step in self.steps

    def next_step(self) -> str | None:
        return next((s for s in STEPS if s not in self.steps), None)


@dataclass
class LoopState:
    dataset: str
    label_field: str
    config: str  # absolute path of the user's training config
    start_checkpoint: str
    taxonomy: str = "fine"
    image_size: int = 0  # prepared image size (fixed by the first receive)
    data_root: str = ""
    rounds: list[Round] = field(default_factory=list)

    def last(self) -> Round | None:
        return self.rounds[-1] if self.rounds else None

    def current_checkpoint(self) -> str:
        """The model the next round ranks with: the last round's fine-tuned one."""
        for done in reversed(self.rounds):
            if done.new_checkpoint:
                return done.new_checkpoint
        return self.start_checkpoint

    def round(self, number: int | None = None) -> Round:
        if not self.rounds:
            raise LoopError("no round yet: start one with `annotate.py rank`")
        if number is None:
            return self.rounds[-1]
        for candidate in self.rounds:
            if candidate.number == number:
                return candidate
        raise LoopError(f"no round {number}: rounds 1-{len(self.rounds)} exist")


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S")


def state_path(loop_dir: Path) -> Path:
    return Path(loop_dir) / STATE_FILE


def load_state(loop_dir: Path) -> LoopState | None:
    path = state_path(loop_dir)
    if not path.is_file():
        return None
    try:
        raw = json.loads(path.read_text())
        rounds = [Round(**r) for r in raw.pop("rounds", [])]
        return LoopState(**raw, rounds=rounds)
    except (json.JSONDecodeError, TypeError) as exc:
        raise LoopError(f"{path}: not a loop state this version reads ({exc})") from None


def save_state(loop_dir: Path, state: LoopState) -> None:
    Path(loop_dir).mkdir(parents=True, exist_ok=True)
    text = json.dumps(asdict(state), indent=2) + "\n"
    write_bytes_atomic(state_path(loop_dir), text.encode())


def finish(loop_dir: Path, state: LoopState, loop_round: Round, step: str) -> None:
    """Record a finished step and save at once."""
    loop_round.steps[step] = now()
    save_state(loop_dir, state)


def round_dir(loop_dir: Path, loop_round: Round) -> Path:
    path = Path(loop_dir) / loop_round.name
    path.mkdir(parents=True, exist_ok=True)
    return path
