"""`CoralSegMetric`: per-class IoU / Acc, mIoU, mAcc, aAcc and the confusion matrix.

Everything is computed from one confusion matrix (rows: ground truth, columns:
prediction; pixels with the ignore index left out), gathered across processes.
Values are fractions (0.4953), as the guide reports them. Classes absent from
both ground truth and prediction are left out of the means (NaN), as in mmseg.
With `output_dir`, the evaluation also writes metrics.json, confusion_matrix.csv
and a row-normalised confusion_matrix.png there.

Each ground-truth mask is checked here, where its file name is still at hand: a
value that is neither a class index nor the ignore index (a mask from another
taxonomy, or drawn by hand) is a `LabelValueError` naming the file, instead of
pixels counted into another class's cell or a failure deep inside bincount.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmseg.registry import METRICS


def confusion_matrix(
    label: np.ndarray, pred: np.ndarray, num_classes: int, ignore_index: int
) -> np.ndarray:
    valid = label != ignore_index
    index = label[valid].astype(np.int64) * num_classes + pred[valid].astype(np.int64)
    return np.bincount(index, minlength=num_classes**2).reshape(num_classes, num_classes)


def metrics_from_confusion(matrix: np.ndarray) -> dict[str, np.ndarray | float]:
    matrix = matrix.astype(np.float64)
    hits = np.diag(matrix)
    label_area, pred_area = matrix.sum(axis=1), matrix.sum(axis=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        iou = hits / (label_area + pred_area - hits)
        acc = hits / label_area
    total = matrix.sum()
    return dict(
        iou=iou,
        acc=acc,
        mIoU=float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan"),
        mAcc=float(np.nanmean(acc)) if np.isfinite(acc).any() else float("nan"),
        aAcc=float(hits.sum() / total) if total else float("nan"),
    )


def format_table(
    classes: Sequence[str], iou: np.ndarray, acc: np.ndarray, m_iou: float, m_acc: float
) -> str:
    """The guide's table: one row per class, then the mean."""
    width = max(len("Class"), *(len(c) for c in classes))

    def cell(value: float, digits: int = 3) -> str:
        return f"{value:.{digits}f}" if np.isfinite(value) else "nan"

    rule = f"+{'-' * (width + 2)}+-------+-------+"
    lines = [rule, f"| {'Class'.center(width)} |  IoU  |  Acc  |", rule]
    lines += [
        f"| {c:<{width}} | {cell(i):>5} | {cell(a):>5} |"
        for c, i, a in zip(classes, iou, acc, strict=True)
    ]
    lines += [rule, f"| {'Mean':<{width}} | {cell(m_iou, 4):>5}| {cell(m_acc, 4):>5}|", rule]
    return "\n".join(lines)


def write_outputs(
    output_dir: Path, classes: Sequence[str], matrix: np.ndarray, results: dict
) -> None:
    output_dir.mkdir(parents=True, exist_ok=True)
    per_class = {
        name: {"IoU": _json_float(i), "Acc": _json_float(a), "pixels": int(matrix[k].sum())}
        for k, (name, i, a) in enumerate(zip(classes, results["iou"], results["acc"], strict=True))
    }
    summary = {key: _json_float(results[key]) for key in ("mIoU", "mAcc", "aAcc")}
    (output_dir / "metrics.json").write_text(
        json.dumps({**summary, "per_class": per_class}, indent=2)
    )
    with open(output_dir / "confusion_matrix.csv", "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["ground truth \\ prediction", *classes])
        for name, row in zip(classes, matrix, strict=True):
            writer.writerow([name, *row.tolist()])
    _plot_confusion(output_dir / "confusion_matrix.png", classes, matrix)


def _json_float(value: float) -> float | None:
    return None if not np.isfinite(value) else round(float(value), 6)


def _plot_confusion(path: Path, classes: Sequence[str], matrix: np.ndarray) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with np.errstate(divide="ignore", invalid="ignore"):
        normalised = np.nan_to_num(matrix / matrix.sum(axis=1, keepdims=True))
    size = 2 + 0.45 * len(classes)
    fig, ax = plt.subplots(figsize=(size + 1.5, size))
    image = ax.imshow(normalised, cmap="viridis", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("prediction")
    ax.set_ylabel("ground truth")
    ax.set_title("Confusion matrix (each row sums to 1)")
    for (row, col), value in np.ndenumerate(normalised):
        if value >= 0.01:
            ax.text(col, row, f"{value:.2f}", ha="center", va="center", fontsize=6,
                    color="black" if value > 0.5 else "white")  # fmt: skip
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


class LabelValueError(ValueError):
    """A ground-truth mask holds values that are no class index; the message names it."""


def check_label_values(
    label: torch.Tensor, num_classes: int, ignore_index: int, mask_file: str
) -> None:
    """LabelValueError when `label` holds a value >= num_classes other than ignore_index."""
    bad = (label >= num_classes) & (label != ignore_index)
    if not bool(bad.any()):
        return
    values = torch.unique(label[bad]).tolist()
    shown = ", ".join(str(int(v)) for v in values[:10]) + (", ..." if len(values) > 10 else "")
    raise LabelValueError(
        f"{mask_file}: label values {shown} in {int(bad.sum())} pixel(s), but the dataset has "
        f"{num_classes} classes (0-{num_classes - 1}, {ignore_index} = ignore). Is the mask "
        "from another taxonomy? Re-run prepare_data.py for this dataset, or fix num_classes."
    )


@METRICS.register_module()
class CoralSegMetric(BaseMetric):
    def __init__(
        self,
        ignore_index: int = 255,
        output_dir: str | None = None,
        collect_device: str = "cpu",
        prefix: str | None = None,
    ) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ignore_index = ignore_index
        self.output_dir = output_dir
        self.last_results: dict | None = None

    def process(self, data_batch, data_samples: Sequence[dict]) -> None:
        num_classes = len(self.dataset_meta["classes"])
        for sample in data_samples:
            pred = sample["pred_sem_seg"]["data"].squeeze(0)
            label = sample["gt_sem_seg"]["data"].squeeze(0).to(pred)
            mask_file = sample.get("seg_map_path", "a ground-truth mask")
            check_label_values(label, num_classes, self.ignore_index, mask_file)
            valid = label != self.ignore_index
            index = label[valid].long() * num_classes + pred[valid].long()
            counts = torch.bincount(index, minlength=num_classes**2)
            self.results.append(counts.reshape(num_classes, num_classes).cpu().numpy())

    def compute_metrics(self, results: list) -> dict[str, float]:
        classes = list(self.dataset_meta["classes"])
        matrix = np.sum(results, axis=0)
        computed = metrics_from_confusion(matrix)
        table = format_table(
            classes, computed["iou"], computed["acc"], computed["mIoU"], computed["mAcc"]
        )
        print_log("\n" + table, logger="current")
        self.last_results = dict(computed, confusion=matrix, classes=classes)
        if self.output_dir:
            write_outputs(Path(self.output_dir), classes, matrix, computed)
            print_log(f"Metrics and confusion matrix written to {self.output_dir}", "current")
        metrics = {key: round(computed[key], 4) for key in ("mIoU", "mAcc", "aAcc")}
        for name, value in zip(classes, computed["iou"], strict=True):
            if np.isfinite(value):
                metrics[f"IoU.{name}"] = round(float(value), 4)
        return metrics
