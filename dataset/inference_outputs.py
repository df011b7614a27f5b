"""The input and output folders of inference_with_coralscop.py (the guide's layout), kept safe.

    <output>/visualizations/<stem>.jpg          instances coloured by genus, with a legend
    <output>/masks/<stem>/instance_NNN.png      one full-size single-channel mask per instance
    <output>/semantic/<stem>.png                semantic class map (with --save-semantic)
    <output>/predictions.json                   COCO: images, categories, annotations (RLE)
    <output>/inference_log.txt                  what happened, failures with their reason
    <output>/.per_image/<stem>.json             finished images (a rerun skips them)
    <output>/inference_run.json                 the settings of the run that owns the folder
    <output>/.inference.lock                    held (flock) by the run writing the folder
    <output>/.process_logs/process_NNNN.txt     each process's log during a sharded run

Every write is checked and atomic (temporary name, then rename): a failed write
raises ImageWriteError naming the file. Each image's files are complete before
its `.per_image` record is written (last, by rename), so an interrupted run
resumes where it stopped and a failed write never marks an image done.
predictions.json is assembled from the records once, at the end of a run, and
replaced by rename: a reader finds either no file (a first run still going or
killed) or a complete COCO document. A folder that holds another run's results is
refused unless overwrite is asked for, and even then when no run's marker (RUN_FILE)
says a run made the files it would remove, or when they hold the input; a folder
another run is writing is refused. --overwrite removes only the files a run writes
(RUN_FILES: visualizations/<stem>.jpg, masks/<stem>/instance_NNN.png, ...); a file of
the user's beside them stays, also in masks/<stem>/ when that image is written again.

A sharded run (several processes) shares one folder: its main process claims it
and holds the lock; the others `join` it and write only their own images. Each
process logs into its own file (appends from several hosts to one file on a
network share interleave); the main process merges them into inference_log.txt
in time order at the end, or the next run does, after a killed one.
"""

from __future__ import annotations

import contextlib
import fcntl
import heapq
import json
import logging
import os
import re
import shutil
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np

from dataset import IMAGE_SUFFIXES
from dataset.coco import coco_document, image_annotations
from dataset.image_io import write_bytes_atomic, write_image
from dataset.output_safety import input_inside
from dataset.run_files import (
    END_FILES,
    FOLDERS,
    PROCESS_LOGS,
    ROOT_FILES,
    clear_run_files,
    edited_files,
    end_file_target,
    note_written,
    odd_shapes,
    remove_instance_files,
)
from dataset.visualize import draw_instances

log = logging.getLogger("inference")

RUN_FILE = "inference_run.json"
LOCK_FILE = ".inference.lock"
# a log record's first line starts with logging's asctime (its order is time order)
RECORD_START = re.compile(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} ")
OUTPUTS = (*FOLDERS, *ROOT_FILES)  # every name a run writes (dataset/run_files.py)
# What dataset.image_io.read_rgb decodes (OpenCV, or Pillow for GIF and JPEG 2000).
READABLE_SUFFIXES = tuple(
    dict.fromkeys(
        (*IMAGE_SUFFIXES, ".jpe", ".dib", ".webp", ".gif", ".jp2", ".avif")
        + (".pbm", ".pgm", ".ppm", ".pnm")
    )
)
# Files cameras and tools often leave beside images, with what to do about them.
KNOWN_OTHERS = {
    (".heic", ".heif"): "HEIC/HEIF photos are not readable here; export them as JPEG",
    (".dng", ".cr2", ".cr3", ".nef", ".arw", ".orf", ".rw2", ".raf"): (
        "camera raw files are not read; export them as JPEG or 16-bit TIFF"
    ),
}
JPEG_QUALITY = 95


class OutputConflictError(RuntimeError):
    """The output folder belongs to another run, or another run is writing it."""


class InputFolderError(ValueError):
    """The input folder is missing, or holds nothing inference can read."""


@dataclass
class InputScan:
    """Every entry of an input folder: the images to process, and the rest with why."""

    folder: Path
    images: list[Path] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)


def _why_skipped(path: Path) -> str:
    if path.name.startswith("."):
        return "a hidden file (such as the '._' copies macOS leaves on cards); not read"
    if path.is_dir():
        return "a folder: only the files directly in --input-dir are read, not sub-folders"
    if not path.exists():
        return "a broken link"
    suffix = path.suffix.lower()
    for suffixes, advice in KNOWN_OTHERS.items():
        if suffix in suffixes:
            return advice
    kind = f"'{suffix}' files" if suffix else "files without an extension"
    return f"not an image format inference reads ({kind}); readable: {', '.join(READABLE_SUFFIXES)}"


def scan_inputs(folder: str | Path) -> InputScan:
    """Sort every entry of the folder into images and skipped entries (each with a reason).

    Raises InputFolderError when there is nothing to do (a missing or empty folder,
    or one without a readable image), so a run can stop before loading any model."""
    folder = Path(folder)
    if not folder.is_dir():
        what = "is a file, not a folder" if folder.exists() else "does not exist"
        raise InputFolderError(f"--input-dir {folder} {what}")
    scan = InputScan(folder)
    for path in sorted(folder.iterdir()):
        readable = path.suffix.lower() in READABLE_SUFFIXES and not path.name.startswith(".")
        if readable and path.is_file():
            scan.images.append(path)
        else:
            scan.skipped.append((path, _why_skipped(path)))
    if not scan.images:
        if not scan.skipped:
            raise InputFolderError(f"--input-dir {folder} is empty: no image to process")
        count = len(scan.skipped)
        names = ", ".join(p.name for p, _ in scan.skipped[:10])
        more = f" and {count - 10} more" if count > 10 else ""
        entries = "entry" if count == 1 else "entries"
        raise InputFolderError(
            f"--input-dir {folder} holds no image inference reads ({count} other {entries}: "
            f"{names}{more}); readable: {', '.join(READABLE_SUFFIXES)}"
        )
    return scan


class OutputFolder:
    """The output folder of one run; holds the folder's lock until `close` (or exit).

    join: write into the folder that the main process of the same sharded run has
    claimed and holds the lock of (its settings must be this run's).
    inputs: the input folder (or files); no output the run may remove can hold one."""

    def __init__(
        self,
        root: str | Path,
        run_info: dict,
        overwrite: bool = False,
        join: bool = False,
        inputs: Iterable[str | Path] = (),
    ) -> None:
        self.root = Path(root)
        self._lock = None
        self.kept: list[Path] = []  # files of the user's that --overwrite left in place
        if join:
            self._join(run_info)
            return
        if self.root.exists() and not self.root.is_dir():
            raise OutputConflictError(f"--output-dir {self.root} is a file; choose a folder")
        for name in (*OUTPUTS, RUN_FILE):
            source = input_inside(self.root / name, inputs)
            if source is not None:
                raise OutputConflictError(
                    f"the input {source} lies in {self.root / name}, which a run replaces; "
                    "move the input, or choose another --output-dir"
                )
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = self._acquire_lock()
        try:
            self._claim(run_info, overwrite)
        except BaseException:
            self.close()
            raise

    def _acquire_lock(self) -> int:
        """An exclusive flock on the lock file. The kernel releases it when the process
        ends, however it ends, so a killed run leaves no stale lock; the file stays
        (removing it would let two runs lock two different files)."""
        path = self.root / LOCK_FILE
        try:
            handle = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL, 0o644)
            self._created_lock_file = True
        except FileExistsError:
            handle = os.open(path, os.O_RDWR)
            self._created_lock_file = False
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(handle, 200, 0).decode(errors="replace").strip() or "unknown"
            os.close(handle)
            raise OutputConflictError(
                f"another inference run is writing {self.root} ({holder}); wait for it to "
                "finish, or choose another --output-dir"
            ) from None
        os.ftruncate(handle, 0)
        started = time.strftime("%Y-%m-%d %H:%M:%S")
        os.pwrite(handle, f"pid {os.getpid()}, started {started}".encode(), 0)
        return handle

    def _claim(self, run_info: dict, overwrite: bool) -> None:
        marker = self.root / RUN_FILE
        if any(p.name != LOCK_FILE for p in self.root.iterdir()):
            previous = json.loads(marker.read_text()) if marker.is_file() else None
            if previous != run_info:
                ours = [n for n in (*OUTPUTS, RUN_FILE) if (self.root / n).exists()]
                refused = None
                if not overwrite:
                    what = "another run's results" if previous else "files of its own"
                    refused = (
                        f"{self.root} already holds {what}; pass --overwrite to replace this "
                        "run's outputs there, or choose another --output-dir."
                    )
                elif previous is None and ours:
                    # the names a run writes, but no run's marker: they may be the user's
                    refused = (
                        f"{self.root} holds {', '.join(ours)} but no {RUN_FILE}: no inference "
                        "run made them (or one made before runs were marked), so --overwrite "
                        "does not remove them. Move them away yourself if they are not needed, "
                        "or choose another --output-dir."
                    )
                if refused:
                    if previous is None and self._created_lock_file:
                        # no run's folder: leave it as the user made it
                        (self.root / LOCK_FILE).unlink()
                    raise OutputConflictError(refused)
                self._clear()
        for name in ("visualizations", "masks", ".per_image"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        self._remove_leftovers()
        self.merge_process_logs()  # a killed sharded run's logs
        write_bytes_atomic(marker, json.dumps(run_info, indent=2).encode())

    def _join(self, run_info: dict) -> None:
        marker = self.root / RUN_FILE
        claimed = json.loads(marker.read_text()) if marker.is_file() else None
        if claimed != run_info:
            raise OutputConflictError(
                f"{self.root} was not claimed with this process's settings; start every "
                "process of a sharded run with the same command"
            )

    def close(self) -> None:
        """Release the folder's lock (process exit does it too)."""
        if self._lock is not None:
            os.close(self._lock)
            self._lock = None

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _clear(self) -> None:
        """Remove what a run writes, and nothing else (dataset/run_files.py): refused,
        before anything is removed, where someone changed a run's file since the run
        wrote it or a run's name holds something else; files no run writes stay, listed
        in `kept` (the run logs them)."""
        problems = odd_shapes(self.root)
        edited = edited_files(self.root)
        if edited:
            more = f" and {len(edited) - 10} more" if len(edited) > 10 else ""
            shown = ", ".join(edited[:10]) + more
            problems.append(
                f"changed after the run wrote them: {shown} (a layer edited in QGIS, a project "
                "saved by TagLab?); move them out of the folder to keep them"
            )
        if problems:
            raise OutputConflictError(
                f"--overwrite would replace what is not the last run's in {self.root}: "
                + "; ".join(problems)
                + ". Then run again, or choose another --output-dir."
            )
        self.kept = [p.relative_to(self.root) for p in clear_run_files(self.root)]
        (self.root / RUN_FILE).unlink(missing_ok=True)

    def _remove_leftovers(self) -> None:
        """Temporary files and staging folders of a run that was killed (this run holds
        the lock, so no other run is writing them)."""
        for name in (".", "visualizations", "semantic", ".per_image", "mosaics"):
            folder = self.root / name
            for path in folder.glob(".*.tmp-*") if folder.is_dir() else ():
                path.unlink(missing_ok=True)
        for staging in (self.root / "masks").glob(".*.partial"):
            shutil.rmtree(staging, ignore_errors=True)

    @property
    def log_file(self) -> Path:
        return self.root / "inference_log.txt"

    def process_log(self, rank: int) -> Path:
        """Where process `rank` of a sharded run logs until the logs are merged."""
        folder = self.root / PROCESS_LOGS
        folder.mkdir(exist_ok=True)
        return folder / f"process_{rank:04d}.txt"

    def merge_process_logs(self) -> int:
        """Append the processes' logs to inference_log.txt, records in time order (a
        record keeps its continuation lines, such as a traceback), then remove them;
        returns how many were merged. A failed append raises and removes nothing."""
        files = sorted((self.root / PROCESS_LOGS).glob("process_*.txt"))
        if not files:
            return 0
        with contextlib.ExitStack() as stack:
            streams = [_records(stack.enter_context(open(f, encoding="utf-8", errors="replace")))
                       for f in files]  # fmt: skip
            target = stack.enter_context(open(self.log_file, "a", encoding="utf-8"))
            for _, text in heapq.merge(*streams, key=lambda record: record[0]):
                target.write(text)
        for path in files:
            path.unlink()
        with contextlib.suppress(OSError):  # kept if something else was put there
            (self.root / PROCESS_LOGS).rmdir()
        return len(files)

    def _record(self, stem: str) -> Path:
        return self.root / ".per_image" / f"{stem}.json"

    def record_path(self, stem: str) -> Path:
        """Where an image's record goes; written last, it marks the image done."""
        return self._record(stem)

    def is_done(self, stem: str) -> bool:
        return self._record(stem).is_file()

    def write(self, stem: str, file_name: str, image_rgb: np.ndarray, result, classes, palette,
              save_semantic: bool = False) -> None:  # fmt: skip
        """All outputs of one image, then its record. On any failure the image's partial
        outputs are removed and the error raised: the image is not done."""
        try:
            self._write_outputs(stem, image_rgb, result, classes, palette, save_semantic)
            height, width = image_rgb.shape[:2]
            record = {
                "image": {"file_name": file_name, "height": height, "width": width},
                "annotations": image_annotations(result.instances, image_id=0, first_id=0),
                "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
            }
            write_bytes_atomic(self._record(stem), json.dumps(record).encode())
        except BaseException:
            self._remove_outputs(stem)
            raise

    def _write_outputs(self, stem, image_rgb, result, classes, palette, save_semantic) -> None:
        mask_dir = self.root / "masks" / stem
        staging = self.root / "masks" / f".{stem}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for number, inst in enumerate(result.instances, start=1):
            write_image(staging / f"instance_{number:03d}.png", inst.mask.astype(np.uint8) * 255)
        if mask_dir.is_dir() and not mask_dir.is_symlink() and remove_instance_files(mask_dir):
            # files of the user's beside an earlier run's masks stay; ours move in beside them
            for path in staging.iterdir():
                path.rename(mask_dir / path.name)
            staging.rmdir()
        else:
            staging.rename(mask_dir)
        drawn = draw_instances(image_rgb, result.instances, classes, palette)
        write_image(
            self.root / "visualizations" / f"{stem}.jpg",
            cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR),
            [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY],
        )
        if save_semantic:
            (self.root / "semantic").mkdir(exist_ok=True)
            write_image(self.root / "semantic" / f"{stem}.png", result.class_map)

    def _remove_outputs(self, stem: str) -> None:
        """What an unfinished image left (only files: a folder in a file's place is the
        user's and stays); best effort, the original error is what the user needs."""
        shutil.rmtree(self.root / "masks" / f".{stem}.partial", ignore_errors=True)
        mask_dir = self.root / "masks" / stem
        if mask_dir.is_dir() and not mask_dir.is_symlink():
            with contextlib.suppress(OSError):
                remove_instance_files(mask_dir)
        for path in (self.root / "visualizations" / f"{stem}.jpg",
                     self.root / "semantic" / f"{stem}.png", self._record(stem)):  # fmt: skip
            if path.is_file() or path.is_symlink():
                with contextlib.suppress(OSError):
                    path.unlink()

    def records(self, stems: list[str]) -> Iterator[tuple[int, dict]]:
        """(image id, record) of every finished image, ids by position in `stems` (from 1);
        large images (a "mosaic" record: GeoTIFF and GeoJSON outputs) are not among them."""
        for image_id, stem in enumerate(stems, start=1):
            path = self._record(stem)
            if path.is_file():
                record = json.loads(path.read_text())
                if "mosaic" not in record:
                    yield image_id, record

    def assemble(self, stems: list[str], classes) -> Path:
        """predictions.json from every finished image, ids in file order (written by rename)."""
        images, annotations = [], []
        for image_id, record in self.records(stems):
            images.append({"id": image_id, **record["image"]})
            for annotation in record["annotations"]:
                annotations.append({**annotation, "id": len(annotations) + 1, "image_id": image_id})
        target = self.end_file_target("predictions.json")
        write_bytes_atomic(target, json.dumps(coco_document(images, annotations, classes)).encode())
        self.note_written(target)
        return target

    def end_file_target(self, name: str) -> Path:
        """Where an end-of-run file goes: beside the last run's (<stem>.new<suffix>), with a
        warning, when someone changed that one since (dataset/run_files.py)."""
        target = end_file_target(self.root, name)
        if target.name != name:
            log.warning("%s was changed after the run wrote it: kept; this run's is %s",
                        self.root / name, target)  # fmt: skip
        return target

    def note_written(self, path: Path) -> None:
        """Note an end file the run wrote under its own name (replaced by the next run
        only while nobody changes it)."""
        if path.name in END_FILES:
            note_written(self.root, path)


def _records(lines: Iterable[str]) -> Iterator[tuple[str, str]]:
    """(timestamp, text) of each log record, one record in memory at a time."""
    stamp, text = "", ""
    for line in lines:
        start = RECORD_START.match(line)
        if start and text:
            yield stamp, text
            text = ""
        if start:
            stamp = start.group(0)
        text += line if line.endswith("\n") else line + "\n"
    if text:
        yield stamp, text
