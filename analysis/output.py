"""An output folder that appears complete or not at all, and never replaces a user's files.

Everything is written into a staging folder beside the target and renamed at the end
(dataset/output_safety.py: the rule every tool follows): an interrupted run leaves the
previous results intact and no half folder, and a later run removes its leftovers. An
existing folder is replaced only when asked (--overwrite) and only when reef_stats.py
wrote it; never one that holds or lies inside an input.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from pathlib import Path

import pandas as pd

from dataset.image_io import write_bytes_atomic
from dataset.output_safety import check_replaceable, clean_leftovers
from dataset.output_safety import staged_folder as _staged_folder

TOOL = "reef_stats.py"


def check_target(target: Path, overwrite: bool, inputs: Iterable[Path | None] = ()) -> None:
    """Refuse early, before any work, to write where a user's file could be lost (after
    putting back an output a killed run was swapping out: it is what would be replaced)."""
    clean_leftovers(target)
    check_replaceable(target, TOOL, overwrite, inputs)


@contextlib.contextmanager
def staged_folder(
    target: str | Path, overwrite: bool = False, inputs: Iterable[Path | None] = ()
) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `target`, on failure it is removed."""
    with _staged_folder(target, TOOL, overwrite, inputs) as staging:
        yield staging


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """A CSV without the index, floats as Python prints them, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, table.to_csv(index=False).encode())
