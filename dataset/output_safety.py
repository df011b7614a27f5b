"""Output folders that never cost a user a file: the rule every tool that replaces outputs
follows (prepare_data.py, reef_stats.py, inference_with_coralscop.py).

- A folder a tool writes carries a marker file (MARKER) naming the tool and the files it
  wrote, with their sizes and times. `--overwrite` replaces a folder only when its marker
  names the same tool, it holds no file the marker does not list and none has changed
  since: a folder the user made, another tool's folder, one written before the marker
  existed, one the user has added files to or edited a file in is refused, with what
  to do, and left as it is.
- Nothing is replaced that holds one of the run's inputs or lies inside one: replacing
  it would delete what the run is reading.
- A whole folder is written under a temporary name beside the target and renamed at the
  end (`staged_folder`): an interrupted run leaves the previous output intact and no half
  folder. The temporary names carry the host and process id, so a later run removes
  what a killed run left behind, and puts back a previous output a run died swapping out.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import socket
import tempfile
from collections.abc import Iterable, Iterator
from glob import escape as glob_escape
from pathlib import Path

from dataset.image_io import write_bytes_atomic

log = logging.getLogger(__name__)

MARKER = ".coral_toolkit_output.json"


class OutputRefusedError(FileExistsError):
    """The output folder exists and may not be replaced (the message says why and what to do)."""


def write_marker(folder: str | Path, tool: str) -> None:
    """Mark `folder` as written by `tool`, listing every file in it with its size and
    modification time: the proof --overwrite asks for, and what tells a later run which
    files are not the tool's, or no longer as the tool wrote them (a cover.csv edited)."""
    folder = Path(folder)
    files = {
        str(p.relative_to(folder)): file_stats(p)
        for p in sorted(folder.rglob("*"))
        if p.is_file() and p.name != MARKER
    }
    write_bytes_atomic(folder / MARKER, json.dumps({"tool": tool, "files": files}).encode())


def file_stats(path: Path) -> list[int]:
    """[size, modification time in ns]: what tells a file as a tool wrote it from one
    changed since (here and in dataset/run_files.py)."""
    stat = path.stat()
    return [stat.st_size, stat.st_mtime_ns]


def _marker(folder: Path) -> dict:
    try:
        found = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return {}
    return found if isinstance(found, dict) else {}


def made_by(folder: str | Path) -> str | None:
    """The tool whose marker `folder` carries; None for a folder without (or with a bad) one."""
    return _marker(Path(folder)).get("tool")


def changed_since_written(folder: str | Path) -> list[str]:
    """Files of a marked folder whose size or time moved since the tool wrote them (edited
    by hand); none for a marker that lists names only (written before times were kept)."""
    folder = Path(folder)
    written = _marker(folder).get("files", [])
    if not isinstance(written, dict):
        return []
    return sorted(
        name
        for name, stats in written.items()
        if (folder / name).is_file() and file_stats(folder / name) != stats
    )


def not_written_by_the_tool(folder: str | Path) -> list[str]:
    """Files in a marked folder that its marker does not list (put there since, by hand)."""
    folder = Path(folder)
    written = set(_marker(folder).get("files", []))
    return sorted(
        name
        for name in (str(p.relative_to(folder)) for p in folder.rglob("*") if not p.is_dir())
        if name != MARKER and name not in written
    )


def absolute(path: str | Path) -> Path:
    """The path made absolute and normalised without following links ('.' and '..' get a
    name and a parent, so the staging folder lands beside the target, never inside it)."""
    return Path(os.path.abspath(path))


def _nested(a: Path, b: Path) -> bool:
    """a and b are one folder, or one lies inside the other (links resolved)."""
    a, b = a.resolve(), b.resolve()
    return a == b or a.is_relative_to(b) or b.is_relative_to(a)


def input_inside(folder: str | Path, inputs: Iterable[str | Path | None]) -> Path | None:
    """The first input that is `folder` or lies inside it (None: removing it loses no input)."""
    folder = Path(folder).resolve()
    for source in inputs:
        if source is not None and Path(source).resolve().is_relative_to(folder):
            return Path(source)
    return None


def check_not_an_input(target: str | Path, inputs: Iterable[str | Path | None], what: str) -> None:
    """Refuse a target that is, holds or lies inside one of the inputs."""
    target = Path(target)
    for source in inputs:
        if source is not None and _nested(target, Path(source)):
            raise OutputRefusedError(
                f"{what} {target} and the input {source} are one folder or lie inside each "
                f"other: writing there could replace what this run reads. Choose a {what} "
                "outside the inputs."
            )


def check_replaceable(
    target: str | Path,
    tool: str,
    overwrite: bool,
    inputs: Iterable[str | Path | None] = (),
    what: str = "--output-dir",
) -> None:
    """Refuse, before any work, to write `target` where that could lose a file of the user's."""
    target = absolute(target)
    if target.parent == target:
        raise OutputRefusedError(f"{what} {target}: not a folder to write into; choose another")
    if target.is_symlink():
        raise OutputRefusedError(
            f"{what} {target} is a link; give the folder it points to, or another {what}"
        )
    check_not_an_input(target, inputs, what)
    if not target.exists():
        return
    if not target.is_dir():
        raise OutputRefusedError(f"{what} {target} is a file, not a folder; choose another one")
    if not any(target.iterdir()):
        return  # an empty folder: replacing it loses nothing
    if not overwrite:
        raise OutputRefusedError(
            f"{what} {target} already exists; pass --overwrite to replace it, or choose "
            f"another {what}"
        )
    owner = made_by(target)
    if owner != tool:
        why = (
            f"it was written by {owner}"
            if owner
            else f"it has no {MARKER} marker: {tool} did not make it (or made it before "
            "outputs were marked)"
        )
        raise OutputRefusedError(
            f"{what} {target} is not replaced even with --overwrite: {why}, so it may hold "
            f"files of yours. Move or remove it yourself if nothing in it is needed, or "
            f"choose another {what}."
        )
    added = not_written_by_the_tool(target)
    if added:
        shown = ", ".join(added[:5]) + (f" and {len(added) - 5} more" if len(added) > 5 else "")
        raise OutputRefusedError(
            f"{what} {target} is not replaced even with --overwrite: it holds files {tool} "
            f"did not write ({shown}). Move them out of it, or choose another {what}."
        )
    changed = changed_since_written(target)
    if changed:
        more = f" and {len(changed) - 5} more" if len(changed) > 5 else ""
        raise OutputRefusedError(
            f"{what} {target} is not replaced even with --overwrite: files changed since "
            f"{tool} wrote them ({', '.join(changed[:5])}{more}). Copy them out of it if "
            f"the changes are yours to keep, then delete it yourself, or choose another {what}."
        )


def _temporary_prefix(target: Path, kind: str) -> str:
    """Names of the temporary folders beside the target say whose they are, so that a
    later run can tell those of a killed run from those of a run still going."""
    return f".{target.name}.{kind}-{socket.gethostname()}-{os.getpid()}-"


def _kind_of_dead_run(path: Path, target: Path) -> str | None:
    """The kind (partial or old) of a temporary folder of a run on this machine that is no
    longer alive; None otherwise (a run still going, another machine's run, other files)."""
    pattern = rf"\.{re.escape(target.name)}\.(?P<kind>partial|old)-(?P<host>.+)-(?P<pid>\d+)-"
    found = re.match(pattern, path.name)
    if not found or found["host"] != socket.gethostname():
        return None  # a run on another machine (shared disk) cannot be checked from here
    try:
        os.kill(int(found["pid"]), 0)
    except ProcessLookupError:
        return found["kind"]
    except PermissionError:  # alive, another user's
        pass
    return None


def clean_leftovers(target: str | Path) -> None:
    """Undo what a killed run left beside the target: its half-written folder, and the
    previous output if the run died while swapping it for the new one."""
    target = absolute(target)
    if not target.parent.is_dir():
        return
    for path in sorted(target.parent.glob(f".{glob_escape(target.name)}.*")):
        kind = _kind_of_dead_run(path, target)
        if kind == "old" and not target.exists():
            path.rename(target)
            log.warning("Restored %s, which an interrupted run had moved to %s", target, path)
        elif kind is not None:
            shutil.rmtree(path, ignore_errors=True)
            log.info("Removed %s, left by an interrupted run", path)


def _replace_folder(staging: Path, target: Path) -> None:
    """Move the finished folder into place; the old one goes only once the new one is there.

    A run killed between the two renames leaves the old output as `.<name>.old-...`, which
    the next run puts back. Once the new folder is in place, the old one takes the staging
    name, which is always safe to delete (the caller deletes it)."""
    if not target.exists():
        staging.rename(target)
        return
    retired = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target, "old"), dir=target.parent))
    target.replace(retired)  # onto the empty folder just made
    staging.rename(target)
    retired.rename(staging)


@contextlib.contextmanager
def staged_folder(
    target: str | Path,
    tool: str,
    overwrite: bool = False,
    inputs: Iterable[str | Path | None] = (),
    what: str = "--output-dir",
) -> Iterator[Path]:
    """Yield an empty staging folder; on success it is marked and replaces `target` (checked
    again: another run may have written it meanwhile), on failure it is removed."""
    target = absolute(target)
    inputs = list(inputs)
    clean_leftovers(target)
    check_replaceable(target, tool, overwrite, inputs, what)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=_temporary_prefix(target, "partial"), dir=target.parent))
    try:
        yield staging
        write_marker(staging, tool)
        check_replaceable(target, tool, overwrite, inputs, what)
        _replace_folder(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
