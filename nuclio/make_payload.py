"""Write test_payload.json ({"image": base64}) from an image, for curl or CVAT-like tests.

python make_payload.py IMAGE [--output test_payload.json] [--threshold 0.3]
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


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("image", type=Path)
    parser.add_argument("--output", type=Path, default=Path("test_payload.json"))
    parser.add_argument("--threshold", type=float)
    args = parser.parse_args()
    args.output.write_text(json.dumps(payload(args.image, args.threshold)))
    print(f"Wrote {args.output} from {args.image}")
