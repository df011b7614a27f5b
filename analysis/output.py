"""An output folder that appears complete or not at all.

Everything is written into a staging folder beside the target and renamed at the end:
an interrupted run leaves the previous results intact and no half folder. An existing
folder is replaced only when asked (--overwrite).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pandas as pd

from dataset.image_io import write_bytes_atomic


class OutputExistsError(FileExistsError):
    """The output folder exists and --overwrite was not given."""


def check_target(target: Path, overwrite: bool) -> None:
    """Refuse early, before any work, to clobber an existing folder."""
    if target.exists() and not overwrite:
        raise OutputExistsError(
            f"{target} already exists; pass --overwrite to replace it, or choose another "
            "--output-dir"
        )
    if target.exists() and not target.is_dir():
        raise OutputExistsError(f"{target} is a file, not a folder; choose another --output-dir")


@contextlib.contextmanager
def staged_folder(target: str | Path, overwrite: bool = False) -> Iterator[Path]:
    """Yield a staging folder; on success it replaces `target`, on failure it is removed."""
    target = Path(target)
    check_target(target, overwrite)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = target.with_name(f".{target.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir()
    try:
        yield staging
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    check_target(target, overwrite)  # another run may have written it meanwhile
    if target.exists():
        old = target.with_name(f".{target.name}.old-{os.getpid()}")
        target.rename(old)
        staging.rename(target)
        shutil.rmtree(old, ignore_errors=True)
    else:
        staging.rename(target)


def write_csv(table: pd.DataFrame, path: Path) -> None:
    """A CSV without the index, floats as Python prints them, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_bytes_atomic(path, table.to_csv(index=False).encode())
