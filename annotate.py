"""The annotation loop: the model picks the quadrats worth a person's time, CVAT gets them
pre-annotated, the corrections come back and the model learns from them, round by round.

    python annotate.py rank DATASET --config CONFIG --checkpoint CKPT --budget 20
    python annotate.py send DATASET                 # round_N/cvat_round_N.zip for CVAT
    python annotate.py receive DATASET --export corrected.zip
    python annotate.py status DATASET

Each command does one step of the current round and refuses a step already done; an
interrupted step goes on where it stopped when run again. Everything a round writes is
in the loop folder (default work_dirs/annotation_loop/<DATASET>): loop.json, round_N/
(ranking.csv, sent.json, the CVAT archive, train/, test/), rounds.csv and rounds.png.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from annotation.cvat_archive import CVATExportError, ExportMismatchError, UnsupportedShapeError
from annotation.finetune import StepFailedError
from annotation.selection import STRATEGIES
from annotation.state import LoopError
from dataset.prepare import PrepareError
from dataset.taxonomy import UnknownLabelsError

ERRORS = (LoopError, CVATExportError, ExportMismatchError, UnsupportedShapeError,
          StepFailedError, PrepareError, UnknownLabelsError, FileNotFoundError)  # fmt: skip


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, text: str) -> argparse.ArgumentParser:
        sub = commands.add_parser(name, help=text, description=text)
        sub.add_argument("dataset", help="the FiftyOne dataset")
        sub.add_argument("--loop-dir", help="default: work_dirs/annotation_loop/<DATASET>")
        return sub

    rank = command("rank", "score the unlabelled samples and pick the next round's images")
    rank.add_argument("--config", help="training config (first round; kept in loop.json)")
    rank.add_argument("--checkpoint", help="model to rank with (default: the last round's)")
    rank.add_argument("--budget", type=int, default=20, help="images per round (default 20)")
    rank.add_argument("--strategy", choices=STRATEGIES, default="hybrid")
    rank.add_argument("--seed", type=int, default=0, help="for random selection and val draws")
    rank.add_argument("--uncertainty", choices=("entropy", "margin"), default="entropy")
    rank.add_argument(
        "--unsure-weight",
        type=float,
        default=0.0,
        help="share of the uncertainty taken from the unsure-colony share",
    )
    rank.add_argument("--unlabelled-tag", help="candidates are the samples with this tag")
    rank.add_argument("--label-field", help="polylines field (default CORAL_POLYLINES_FIELD)")
    rank.add_argument("--taxonomy", help="fine, coarse or a .yaml (default CORAL_TAXONOMY)")
    rank.add_argument("--device", help="cpu, cuda:0, ... (default: a GPU if there is one)")

    send = command("send", "pre-annotate the round's images for CVAT")
    send.add_argument(
        "--archive", help="zip to write (default: <loop dir>/round_N/cvat_round_N.zip)"
    )
    send.add_argument(
        "--cvat",
        action="store_true",
        help="make a CVAT task through FiftyOne (server and login from .env)",
    )
    send.add_argument("--cvat-url", help="CVAT server (default FIFTYONE_CVAT_URL)")
    send.add_argument("--project-name", help="CVAT project to put the task in")
    send.add_argument("--overwrite", action="store_true", help="replace an existing archive")
    send.add_argument("--device")

    receive = command("receive", "take the corrections back, prepare, fine-tune, evaluate")
    receive.add_argument("--export", help="the zip CVAT exported (CVAT for images 1.1)")
    receive.add_argument(
        "--from-cvat", action="store_true", help="load the round's CVAT task through FiftyOne"
    )
    receive.add_argument(
        "--val-share",
        type=float,
        default=0.0,
        help="share of the round's images tagged val (default 0: all train)",
    )
    receive.add_argument("--epochs", type=int, default=20, help="fine-tuning epochs (default 20)")
    receive.add_argument("--image-size", type=int, help="prepared size (default CORAL_IMAGE_SIZE)")
    receive.add_argument(
        "--data-root", help="where to prepare (default <loop dir>/prepared; kept after round 1)"
    )

    command("status", "print the rounds and the next step")
    return parser.parse_args(argv)  # fmt: skip


def loop_folder(args: argparse.Namespace) -> Path:
    return Path(args.loop_dir or Path("work_dirs") / "annotation_loop" / args.dataset)


def run_rank(args: argparse.Namespace, loop_dir: Path) -> int:
    from annotation.rank import RankSettings, rank
    from settings import load_settings

    settings = load_settings(taxonomy=args.taxonomy, polylines_field=args.label_field)
    chosen = RankSettings(args.budget, args.strategy, args.seed, args.uncertainty,
                          args.unsure_weight, args.unlabelled_tag)  # fmt: skip
    loop_round, failed = rank(args.dataset, loop_dir, args.config, args.checkpoint, chosen,
                              settings.polylines_field, args.device, settings.taxonomy)  # fmt: skip
    print(f"Round {loop_round.number}: {len(loop_round.chosen)} images tagged "
          f"round_{loop_round.number}; ranking in {loop_dir / loop_round.name / 'ranking.csv'}."
          f"\nNext: python annotate.py send {args.dataset}")  # fmt: skip
    return 1 if failed else 0


def run_send(args: argparse.Namespace, loop_dir: Path) -> int:
    from annotation.send import send

    options = {k: v for k, v in (("url", args.cvat_url), ("project_name", args.project_name)) if v}
    where = send(args.dataset, loop_dir, args.archive, args.cvat, args.overwrite, args.device,
                 options)  # fmt: skip
    if args.cvat:
        print(f"Sent to CVAT as annotation run {where[5:]}. When the jobs are done:\n"
              f"  python annotate.py receive {args.dataset} --from-cvat")  # fmt: skip
    else:
        from annotation.state import load_state

        labels = loop_dir / load_state(loop_dir).round().name / "cvat_labels.json"
        print(f"Wrote {where} (the images and their predicted colonies). In CVAT: create a task "
              f"with the labels of {labels} and the images in the zip's images/ folder, "
              "Upload annotations (CVAT 1.1) with this zip, correct, export the task as "
              f"CVAT for images 1.1, then:\n  python annotate.py receive {args.dataset} "
              "--export <the exported zip>")  # fmt: skip
    return 0


def run_receive(args: argparse.Namespace, loop_dir: Path) -> int:
    from annotation.receive import ReceiveSettings, receive

    chosen = ReceiveSettings(args.export, args.from_cvat, args.val_share, args.epochs,
                             args.image_size, args.data_root)  # fmt: skip
    row = receive(args.dataset, loop_dir, chosen)
    print(
        f"Round {row['round']}: test mIoU {row['mIoU']} with {row['labelled_images']} labelled "
        f"training images. Rounds: {loop_dir / 'rounds.csv'}, {loop_dir / 'rounds.png'}\n"
        f"Next round: python annotate.py rank {args.dataset}"
    )
    return 0


def run_status(args: argparse.Namespace, loop_dir: Path) -> int:
    from annotation.state import load_state

    state = load_state(loop_dir)
    if state is None:
        print(f"{loop_dir}: no loop yet (start with `python annotate.py rank`)")
        return 0
    print(f"Loop of {state.dataset} in {loop_dir}: model {state.current_checkpoint()}")
    for loop_round in state.rounds:
        steps = ", ".join(loop_round.steps) or "none"
        following = loop_round.next_step() or "-"
        print(
            f"  round {loop_round.number}: {len(loop_round.chosen)} images by "
            f"{loop_round.strategy}; done: {steps}; next: {following}"
        )
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    run = {"rank": run_rank, "send": run_send, "receive": run_receive, "status": run_status}
    try:
        return run[args.command](args, loop_folder(args))
    except ERRORS as exc:
        logging.getLogger("annotate").error("%s", exc)
        return 1


if __name__ == "__main__":
    sys.exit(main())
