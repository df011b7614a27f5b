"""Which files of an inference output folder a run wrote, and whether anyone has changed
them since: what `--overwrite` may remove and what a rerun may replace.

A run writes, for each image, visualizations/<stem>.jpg, masks/<stem>/instance_NNN.png,
semantic/<stem>.png or mosaics/<stem>.classes.tif|.confidence.tif|.geojson|.gpkg, then
the image's record .per_image/<stem>.json, last. At the end of a run it writes
predictions.json and taglab_project.json (with taglab_images/), and notes their size and
time in .written.json. A file is *edited* when it changed after that:

- an image's file newer than the image's record (a mask retouched, a GeoPackage edited
  in QGIS and saved, as docs/orthomosaics.md suggests);
- an end file whose size or time differs from the note (a TagLab project saved in place);
- a GeoPackage with SQLite's pending-write file beside it (`<file>-wal`, `-journal`: QGIS
  keeps edits there until it checkpoints, and the .gpkg's own time may not move).

Edited files are never removed or replaced: `--overwrite` refuses, naming them, and a
rerun writes its end file beside an edited one (<name>.new.json). Files no run writes
are kept by `clear_run_files`, and listed. GDAL's side files of a run's raster
(<file>.aux.xml, <file>.ovr: statistics and overviews QGIS makes on opening) are
derived: they go with the file.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

from dataset.image_io import write_bytes_atomic
from dataset.output_safety import file_stats

RECORDS = ".per_image"
PROCESS_LOGS = ".process_logs"
WRITTEN = ".written.json"
END_FILES = ("predictions.json", "taglab_project.json")
ROOT_FILES = (*END_FILES, "inference_log.txt")
SIDE_FILES = (".aux.xml", ".ovr")
DERIVED = "(" + "|".join(map(re.escape, SIDE_FILES)) + ")?"
# per folder: the names a run writes there; `stem` names the image whose record dates it
PER_IMAGE = {
    "visualizations": re.compile(r"(?P<stem>.+)\.jpg"),
    "semantic": re.compile(r"(?P<stem>.+)\.png"),
    "mosaics": re.compile(r"(?P<stem>.+)\.(classes\.tif|confidence\.tif|geojson|gpkg)" + DERIVED),
}
INSTANCE = re.compile(r"instance_\d+\.png")  # in masks/<stem>/
OTHERS = {
    RECORDS: re.compile(r".+\.json"),
    PROCESS_LOGS: re.compile(r"process_\d+\.txt"),
    "taglab_images": re.compile(r".+\.png"),
}
FOLDERS = (*PER_IMAGE, "masks", *OTHERS)
PENDING = re.compile(r".+\.gpkg-(wal|journal)")
SQLITE_SIDE = re.compile(r".+\.gpkg-(wal|shm|journal)")
TEMPORARY = re.compile(r"\..*\.(tmp-.*|partial)")  # a killed run's (image_io, the masks' staging)


def _plain_folder(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink()


def odd_shapes(root: Path) -> list[str]:
    """Run names that are not what a run makes of them (a file or link where the run keeps
    a folder, a folder where it writes a file): a run would fail on them, so they stop it
    before anything is removed."""
    odd = [f"{n} (a file or link; a run keeps a folder there)" for n in FOLDERS
           if (root / n).exists() or (root / n).is_symlink()
           if not _plain_folder(root / n)]  # fmt: skip
    odd += [f"{n} (a folder; a run writes a file there)" for n in ROOT_FILES
            if (root / n).is_dir()]  # fmt: skip
    return odd


def edited_files(root: Path) -> list[str]:
    """The run's files someone changed after the run wrote them (see the module)."""
    edited = []
    record_times: dict[str, int | None] = {}  # one stat per image, not per file

    def newer_than_record(path: Path, stem: str) -> bool:
        if stem not in record_times:
            record = root / RECORDS / f"{stem}.json"
            record_times[stem] = record.stat().st_mtime_ns if record.is_file() else None
        written = record_times[stem]
        return written is not None and path.stat().st_mtime_ns > written

    for name, pattern in PER_IMAGE.items():
        folder = root / name
        for path in sorted(folder.iterdir()) if _plain_folder(folder) else ():
            match = pattern.fullmatch(path.name)
            dated = match and not path.name.endswith(SIDE_FILES) and path.is_file()
            if PENDING.fullmatch(path.name) or (
                dated and newer_than_record(path, match.group("stem"))
            ):
                edited.append(f"{name}/{path.name}")
    masks = root / "masks"
    for folder in sorted(masks.iterdir()) if _plain_folder(masks) else ():
        for path in sorted(folder.iterdir()) if _plain_folder(folder) else ():
            ours = INSTANCE.fullmatch(path.name) and path.is_file()
            if ours and newer_than_record(path, folder.name):
                edited.append(f"masks/{folder.name}/{path.name}")
    noted = _written(root)
    for name, stats in noted.items():
        path = root / name
        if path.is_file() and file_stats(path) != stats:
            edited.append(name)
    return edited


def _written(root: Path) -> dict[str, list[int]]:
    path = root / WRITTEN
    try:
        return json.loads(path.read_text()) if path.is_file() else {}
    except (OSError, ValueError):
        return {}


def note_written(root: Path, path: Path) -> None:
    """Note an end file as the run wrote it (its size and time), for `edited_files`."""
    noted = _written(root)
    noted[path.name] = file_stats(path)
    write_bytes_atomic(root / WRITTEN, json.dumps(noted, indent=1).encode())


def end_file_target(root: Path, name: str) -> Path:
    """Where a run writes an end file: over the last run's, or beside it (<stem>.new<suffix>)
    when someone changed it after the run wrote it."""
    path = root / name
    noted = _written(root).get(name)
    if noted is not None and path.is_file() and file_stats(path) != noted:
        return path.with_name(f"{path.stem}.new{path.suffix}")
    return path


def clear_run_files(root: Path) -> list[Path]:
    """Remove every file a run writes in `root` (and its folders, where that empties them);
    returns what was kept: files no run writes. Call it after `edited_files` and
    `odd_shapes` found nothing."""
    kept = []
    for name in FOLDERS:
        folder = root / name
        if not _plain_folder(folder):
            continue
        for path in sorted(folder.iterdir()):
            if TEMPORARY.fullmatch(path.name):
                shutil.rmtree(path) if _plain_folder(path) else path.unlink()
            elif name == "masks" and _plain_folder(path):
                kept += remove_instance_files(path)
            elif name != "masks" and _is_run_file(name, path.name) and not path.is_dir():
                path.unlink()
            else:
                kept.append(path)
        if not any(folder.iterdir()):
            folder.rmdir()
    for name in (*ROOT_FILES, WRITTEN):
        path = root / name
        if path.is_file() or path.is_symlink():
            path.unlink()
    return kept


def _is_run_file(folder: str, name: str) -> bool:
    pattern = PER_IMAGE.get(folder) or OTHERS[folder]
    return bool(pattern.fullmatch(name) or (folder == "mosaics" and SQLITE_SIDE.fullmatch(name)))


def remove_instance_files(mask_dir: Path) -> list[Path]:
    """Remove the instance_NNN.png files of masks/<stem>/ (and the folder, if that empties
    it); returns what else is there, which stays."""
    others = []
    for path in sorted(mask_dir.iterdir()):
        if INSTANCE.fullmatch(path.name) and not path.is_dir():
            path.unlink()
        else:
            others.append(path)
    if not others:
        mask_dir.rmdir()
    return others
