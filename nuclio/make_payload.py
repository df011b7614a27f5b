"""Write test_payload.json from an image, for curl or CVAT-like tests of either function.

python make_payload.py IMAGE [--output test_payload.json] [--threshold 0.3]       # detector
python make_payload.py IMAGE --positive 640,410 [--negative 700,420] [--box 500,300,800,600]
                                                                                 # interactor

The detector's body is {"image": base64}; the interactor's adds CVAT's prompt keys,
"pos_points" and "neg_points" ([[x, y], ...]) and "obj_bbox" ([[x1, y1], [x2, y2]] or []),
in the image's pixels as CVAT sends them (cvat/apps/lambda_manager/views.py).
"""

from __future__ import annotations

import argparse
import base64
import json
from pathlib import Path


def payload(image: Path, threshold: float | None = None) -> dict:
    body = {"image": base64.b64encode(image.read_bytes()).decode("ascii")}
    if threshold is not None:
        body["threshold"] = threshold
    return body


def click_payload(
    image: Path,
    positives: list[tuple[float, float]],
    negatives: list[tuple[float, float]] = (),
    box: tuple[float, float, float, float] | None = None,
) -> dict:
    """The body CVAT sends an interactor for these clicks (and box)."""
    body = payload(image)
    body["pos_points"] = [list(p) for p in positives]
    body["neg_points"] = [list(p) for p in negatives]
    body["obj_bbox"] = [] if box is None else [list(box[:2]), list(box[2:])]
    return body


def _numbers(text: str, count: int) -> tuple[float, ...]:
    values = tuple(float(v) for v in text.split(","))
    if len(values) != count:
        raise argparse.ArgumentTypeError(f"{text!r}: give {count} comma-separated numbers")
    return values


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("image", type=Path)
    parser.add_argument("--output", type=Path, default=Path("test_payload.json"))
    parser.add_argument("--threshold", type=float)
    for kind in ("positive", "negative"):
        parser.add_argument(
            f"--{kind}", action="append", default=[], metavar="X,Y",
            type=lambda t: _numbers(t, 2), help=f"interactor: a {kind} click",
        )  # fmt: skip
    parser.add_argument("--box", metavar="X1,Y1,X2,Y2", type=lambda t: _numbers(t, 4),
                        help="interactor: a box around the object")  # fmt: skip
    args = parser.parse_args()
    if args.positive or args.negative or args.box:
        body = click_payload(args.image, args.positive, args.negative, args.box)
    else:
        body = payload(args.image, args.threshold)
    args.output.write_text(json.dumps(body))
    print(f"Wrote {args.output} from {args.image}")
