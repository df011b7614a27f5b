"""Confusion matrix of a checkpoint (replaces the guide's `mim run mmseg confusion_matrix`).

    python tools/confusion_matrix.py CONFIG CHECKPOINT --save-dir DIR [--show] [--split val|test]

Runs test.py's evaluation (the same code) and leaves confusion_matrix.csv (pixel
counts, rows = ground truth), confusion_matrix.png (rows normalised) and
metrics.json in --save-dir.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import test as evaluate  # noqa: E402  (the project's test.py)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("config")
    parser.add_argument("checkpoint")
    parser.add_argument("--save-dir", required=True, help="where the matrix files go")
    parser.add_argument("--split", choices=["val", "test"], default="val")
    parser.add_argument("--show", action="store_true", help="open the heatmap in a window")
    args, extra = parser.parse_known_args(argv)
    status = evaluate.main(
        [args.config, args.checkpoint, "--split", args.split, "--work-dir", args.save_dir, *extra]
    )
    heatmap = Path(args.save_dir) / "confusion_matrix.png"
    if status == 0 and args.show:
        import cv2

        cv2.imshow("confusion matrix", cv2.imread(str(heatmap)))
        cv2.waitKey(0)
    if status == 0:
        print(f"Confusion matrix: {heatmap} and {heatmap.with_suffix('.csv')}")
    return status


if __name__ == "__main__":
    sys.exit(main())
