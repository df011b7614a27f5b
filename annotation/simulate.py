"""A stand-in for the person in CVAT, for the demo and the benchmark: the round's images
come back as a "CVAT for images 1.1" export holding their true shapes (a field of the
dataset, e.g. the synthetic pool's `ground_truth`), under the names they were sent with.

    python -m annotation.simulate DATASET --loop-dir DIR --output corrected.zip

It writes with the same exporter send uses, so what receive reads is what a CVAT export
of a task that imported the round's archive holds.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path

from annotation.cvat_archive import write_cvat_archive
from annotation.send import cvat_label_names
from annotation.state import LoopError, load_state


def write_truth_export(
    dataset_name: str,
    loop_dir: Path,
    output: Path,
    truth_field: str = "ground_truth",
    overwrite: bool = False,
) -> Path:
    """The last sent round's true shapes as a CVAT export at `output`."""
    import fiftyone as fo

    state = load_state(loop_dir)
    if state is None or not state.rounds or not state.round().done("sent"):
        raise LoopError(f"{loop_dir}: no round was sent yet")
    loop_round = state.round()
    sent = json.loads((Path(loop_dir) / loop_round.name / "sent.json").read_text())
    ids = list(sent)
    dataset = fo.load_dataset(dataset_name)
    names = write_cvat_archive(dataset.select(ids, ordered=True), truth_field,
                               cvat_label_names(state.taxonomy),
                               Path(output), overwrite)  # fmt: skip
    if {sample_id: name for name, sample_id in names.items()} != {i: sent[i]["name"] for i in ids}:
        raise LoopError(f"{output}: the names differ from the names the round was sent with")
    return Path(output)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset")
    parser.add_argument("--loop-dir", required=True)
    parser.add_argument("--output", required=True, help="the export zip to write")
    parser.add_argument("--truth-field", default="ground_truth")
    parser.add_argument("--overwrite", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    try:
        path = write_truth_export(
            args.dataset, Path(args.loop_dir), Path(args.output), args.truth_field, args.overwrite
        )
    except (LoopError, FileExistsError) as exc:
        logging.getLogger("annotate").error("%s", exc)
        return 1
    print(f"Wrote {path}: the round's true shapes, as CVAT exports corrections")
    return 0


if __name__ == "__main__":
    sys.exit(main())
