"""The output folder of inference_with_coralscop.py (the guide's layout), written safely.

    <output>/visualizations/<stem>.jpg          instances coloured by genus, with a legend
    <output>/masks/<stem>/instance_NNN.png      one full-size single-channel mask per instance
    <output>/semantic/<stem>.png                semantic class map (with --save-semantic)
    <output>/predictions.json                   COCO: images, categories, annotations (RLE)
    <output>/inference_log.txt                  what happened, failures with their reason
    <output>/.per_image/<stem>.json             finished images (a rerun skips them)
    <output>/inference_run.json                 the settings of the run that owns the folder

Each image's files are complete before its `.per_image` record is written (last,
by rename), so an interrupted run resumes where it stopped. A folder that holds
another run's results is refused unless overwrite is asked for.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np

from dataset.coco import coco_document, image_annotations
from dataset.visualize import draw_instances

RUN_FILE = "inference_run.json"
OUTPUTS = (
    "visualizations",
    "masks",
    "semantic",
    ".per_image",
    "predictions.json",
    "inference_log.txt",
)


class OutputConflictError(RuntimeError):
    """The output folder belongs to another run."""


def _write_atomic(path: Path, data: bytes) -> None:
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    temporary.write_bytes(data)
    temporary.replace(path)


def _write_image(path: Path, image_bgr: np.ndarray) -> None:
    ok, encoded = cv2.imencode(path.suffix, image_bgr)
    if not ok:
        raise OSError(f"could not encode {path}")
    _write_atomic(path, encoded.tobytes())


class OutputFolder:
    def __init__(self, root: str | Path, run_info: dict, overwrite: bool = False) -> None:
        self.root = Path(root)
        marker = self.root / RUN_FILE
        if self.root.exists() and any(self.root.iterdir()):
            previous = json.loads(marker.read_text()) if marker.is_file() else None
            if previous != run_info:
                if not overwrite:
                    what = "another run's results" if previous else "files of its own"
                    raise OutputConflictError(
                        f"{self.root} already holds {what}; pass --overwrite to replace this "
                        "run's outputs there, or choose another --output-dir."
                    )
                self._clear()
        for name in ("visualizations", "masks", ".per_image"):
            (self.root / name).mkdir(parents=True, exist_ok=True)
        _write_atomic(marker, json.dumps(run_info, indent=2).encode())

    def _clear(self) -> None:
        """Remove what a run writes, and nothing else."""
        for name in (*OUTPUTS, RUN_FILE):
            path = self.root / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()

    @property
    def log_file(self) -> Path:
        return self.root / "inference_log.txt"

    def is_done(self, stem: str) -> bool:
        return (self.root / ".per_image" / f"{stem}.json").is_file()

    def write(self, stem: str, file_name: str, image_rgb: np.ndarray, result, classes, palette,
              save_semantic: bool = False) -> None:  # fmt: skip
        height, width = image_rgb.shape[:2]
        mask_dir = self.root / "masks" / stem
        staging = self.root / "masks" / f".{stem}.partial"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        for number, inst in enumerate(result.instances, start=1):
            cv2.imwrite(
                str(staging / f"instance_{number:03d}.png"), inst.mask.astype(np.uint8) * 255
            )
        shutil.rmtree(mask_dir, ignore_errors=True)
        staging.rename(mask_dir)
        drawn = draw_instances(image_rgb, result.instances, classes, palette)
        _write_image(
            self.root / "visualizations" / f"{stem}.jpg", cv2.cvtColor(drawn, cv2.COLOR_RGB2BGR)
        )
        if save_semantic:
            (self.root / "semantic").mkdir(exist_ok=True)
            _write_image(self.root / "semantic" / f"{stem}.png", result.class_map)
        record = {
            "image": {"file_name": file_name, "height": height, "width": width},
            "annotations": image_annotations(result.instances, image_id=0, first_id=0),
            "seconds": {k: round(v, 4) for k, v in result.seconds.items()},
        }
        _write_atomic(self.root / ".per_image" / f"{stem}.json", json.dumps(record).encode())

    def assemble(self, stems: list[str], classes) -> Path:
        """predictions.json from every finished image, ids in file order."""
        images, annotations = [], []
        for image_id, stem in enumerate(stems, start=1):
            path = self.root / ".per_image" / f"{stem}.json"
            if not path.is_file():
                continue
            record = json.loads(path.read_text())
            images.append({"id": image_id, **record["image"]})
            for annotation in record["annotations"]:
                annotations.append({**annotation, "id": len(annotations) + 1, "image_id": image_id})
        target = self.root / "predictions.json"
        _write_atomic(target, json.dumps(coco_document(images, annotations, classes)).encode())
        return target
