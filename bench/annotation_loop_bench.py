"""The annotation loop with a simulated annotator: what each selection strategy buys.

    python bench/annotation_loop_bench.py                          # the issue's run
    python bench/annotation_loop_bench.py --pool 60 --test 12 --val 6 --start 6 \
        --per-round 4 --rounds 1 --seeds 0 --start-epochs 2 --epochs 1   # smoke

A synthetic pool of the built-in example with skewed genus frequencies
(dataset.reef_demo.SKEWED_GENUS_WEIGHTS: Montipora and Fungia about 1 % of colonies each)
is split at random per seed into a fixed test set, a fixed val set, the starting labelled
images and the unlabelled candidates. Per seed, one model is trained from scratch on the
starting images (the tiny demo config) and every strategy starts from it. Each round runs
the loop's real steps (annotation/rank.py, send.py, receive.py: score, pick, pre-annotate,
write the CVAT archive, fine-tune with train.py, evaluate with test.py); the annotator
returns the ground truth of the round's images as a CVAT for images 1.1 export, written
with the same FiftyOne exporter, under the names the round was sent with. Both sides of a
comparison do the same work: the same start model, pool, budget and schedule; only the
images picked differ.

Resumable: each (strategy, seed) is a loop folder whose loop.json says what is done; a
run that stopped goes on from there. Results: <out>/summary.md (table per round, mean and
spread over seeds, rare-genus IoU), <out>/annotation_loop.png, and the rounds.csv of each
loop. FiftyOne datasets live in <out>/fiftyone (FIFTYONE_DATABASE_DIR), not the user's.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RARE = ("Montipora", "Fungia")
CONFIG = ROOT / "configs" / "reef_demo_tiny.py"
log = logging.getLogger("annotation_loop_bench")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "work_dirs" / "annotation_loop_bench"))
    parser.add_argument("--pool", type=int, default=420, help="quadrats in the synthetic pool")
    parser.add_argument("--test", type=int, default=150, help="fixed test images")
    parser.add_argument("--val", type=int, default=30, help="fixed val images")
    parser.add_argument("--start", type=int, default=20, help="labelled images at the start")
    parser.add_argument("--per-round", type=int, default=20, help="images added per round")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--strategies", default="hybrid,random")
    parser.add_argument("--image-size", type=int, default=256)
    parser.add_argument("--start-epochs", type=int, default=100, help="the start model's epochs")
    parser.add_argument("--epochs", type=int, default=10, help="fine-tuning epochs per round")
    return parser.parse_args(argv)


def start_model(base: str, seed: int, args, out: Path) -> str:
    """The seed's starting model, trained from scratch on its starting images (once)."""
    import fiftyone as fo

    from annotation import finetune
    from annotation.pool import SPLIT_TAGS
    from dataset.prepare import prepare_dataset
    from settings import load_settings

    work_dir = out / "start" / base
    best = work_dir / "train" / finetune.BEST_LINK
    if best.exists():
        return str(best.resolve())
    dataset = fo.load_dataset(base)
    dataset.save_view("start_labelled", dataset.match_tags(list(SPLIT_TAGS)), overwrite=True)
    settings = load_settings(image_size=args.image_size, data_root=str(out / "data" / "start"))
    prepared = prepare_dataset(base, settings, overwrite=True, view="start_labelled")
    work_dir.mkdir(parents=True, exist_ok=True)
    config = finetune.write_finetune_config(work_dir, str(CONFIG), prepared.path, args.start_epochs)
    return str(finetune.train(config, work_dir / "train", None))


def run_loop(base: str, strategy: str, seed: int, start: str, args, out: Path) -> list[dict]:
    import fiftyone as fo

    from annotation.rank import RankSettings, rank
    from annotation.receive import ReceiveSettings, receive
    from annotation.records import read_rounds
    from annotation.send import send
    from annotation.simulate import write_truth_export
    from annotation.state import load_state

    name = f"{base}_{strategy}"
    loop_dir = out / "loops" / name
    state = load_state(loop_dir)
    if state is None and fo.dataset_exists(name):
        fo.delete_dataset(name)  # a clone made before the loop's first step: make it again
    if not fo.dataset_exists(name):
        fo.load_dataset(base).clone(name, persistent=True)
    while True:
        state = load_state(loop_dir)
        last = state.last() if state else None
        if last and last.done("recorded") and last.number >= args.rounds:
            return with_rare_colonies(read_rounds(loop_dir), fo.load_dataset(name), state)
        step = last.next_step() if last else None
        started = time.perf_counter()
        if step in (None, "ranked"):  # a new round, or an interrupted ranking
            settings = RankSettings(args.per_round, strategy, seed)
            first = start if state is None else None  # later rounds: the last round's model
            rank(name, loop_dir, str(CONFIG), first, settings, "polylines", "cpu")
        elif step == "sent":
            send(name, loop_dir, device="cpu", overwrite=True)
        else:
            export = loop_dir / last.name / "annotator_export.zip"
            if not last.done("received"):
                write_truth_export(name, loop_dir, export, overwrite=True)
            receive(name, loop_dir, ReceiveSettings(
                export=str(export), epochs=args.epochs, image_size=args.image_size,
                data_root=str(out / "data" / name),
            ))  # fmt: skip
        log.info("%s: step %s in %.0f s", name, step or "ranked", time.perf_counter() - started)


def with_rare_colonies(rows: list[dict], dataset, state) -> list[dict]:
    """Each row gains `rare_colonies`: the colonies of the rare genera (true shapes) in the
    training images labelled by then: what the strategy found for people to draw."""
    truth = dict(zip(*dataset.values(["id", "ground_truth"]), strict=True))
    picked_by = {r.number: set(r.chosen) for r in state.rounds}
    start = set(dataset.match_tags("train").values("id")) - set().union(*picked_by.values())

    def rare(ids) -> int:
        return sum(p.label in RARE for i in ids for p in (truth[i].polylines if truth[i] else []))

    labelled = set(start)
    for row in rows:
        labelled |= picked_by.get(int(row["round"]), set())
        row["rare_colonies"] = rare(labelled)
    return rows


def _mean_spread(values: list[float]) -> tuple[float, float]:
    import numpy as np

    array = np.array(values, float)
    return float(np.nanmean(array)), float(np.nanmax(array) - np.nanmin(array))


def labels_to_reach(curve: list[tuple[float, float]], level: float) -> float | None:
    """Labelled images at which a (labelled, mIoU) curve first reaches `level`, linearly
    interpolated between rounds; None if it never does."""
    for (x0, y0), (x1, y1) in zip(curve, curve[1:], strict=False):
        if y0 >= level:
            return x0
        if y1 >= level:
            return x0 + (x1 - x0) * (level - y0) / (y1 - y0)
    return curve[-1][0] if curve and curve[-1][1] >= level else None


def summarize(results: dict, args, out: Path) -> str:
    """Markdown tables (mean and spread over seeds) and the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lines = ["| strategy | round | labelled | rare colonies labelled | mIoU mean (spread) | "
             + " | ".join(f"IoU {g} mean (spread)" for g in RARE) + " |",
             "|---|---|---|---|---|" + "---|" * len(RARE)]  # fmt: skip
    curves = {}
    figure, axes = plt.subplots(1, 1 + len(RARE), figsize=(5 * (1 + len(RARE)), 4), dpi=110)
    for strategy, per_seed in results.items():
        rounds = min(len(rows) for rows in per_seed.values())
        curve = []
        columns = {"mIoU": [], **{g: [] for g in RARE}}
        for index in range(rounds):
            rows = [per_seed[seed][index] for seed in per_seed]
            labelled = float(rows[0]["labelled_images"])
            miou = _mean_spread([float(r["mIoU"] or "nan") for r in rows])
            rare = [_mean_spread([float(r.get(f"IoU.{g}") or "nan") for r in rows]) for g in RARE]
            curve.append((labelled, miou[0]))
            columns["mIoU"].append(miou[0])
            for g, value in zip(RARE, rare, strict=True):
                columns[g].append(value[0])
            cells = " | ".join(f"{m:.3f} ({s:.3f})" for m, s in rare)
            found = _mean_spread([float(r.get("rare_colonies", "nan")) for r in rows])
            lines.append(f"| {strategy} | {rows[0]['round']} | {labelled:.0f} | "
                         f"{found[0]:.1f} ({found[1]:.0f}) | {miou[0]:.3f} ({miou[1]:.3f}) | "
                         f"{cells} |")  # fmt: skip
        curves[strategy] = curve
        xs = [x for x, _ in curve]
        for axis, key in zip(axes, columns, strict=True):
            axis.plot(xs, columns[key], marker="o", label=strategy)
            axis.set_title(f"test {'mIoU' if key == 'mIoU' else 'IoU ' + key}")
            axis.set_xlabel("labelled training images")
            axis.set_ylim(0.0, 1.0)
            axis.grid(alpha=0.3)
    for axis in axes:
        axis.legend()
    figure.suptitle(f"Annotation loop, mean of seeds {args.seeds}")
    figure.tight_layout()
    figure.savefig(out / "annotation_loop.png")
    plt.close(figure)
    if "random" in curves:
        target = curves["random"][-1]
        for strategy, curve in curves.items():
            if strategy == "random":
                continue
            reached = labels_to_reach(curve, target[1])
            text = (f"{reached:.0f} labelled images ({reached / target[0]:.2f} of random's "
                    f"{target[0]:.0f})" if reached is not None else "not reached")  # fmt: skip
            lines.append(f"\n{strategy} reaches random's final mean mIoU {target[1]:.3f}: {text}")
    summary = "\n".join(lines) + "\n"
    (out / "summary.md").write_text(summary)
    return summary


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out = Path(args.out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    os.environ.setdefault("FIFTYONE_DATABASE_DIR", str(out / "fiftyone"))
    os.environ.setdefault("FIFTYONE_DO_NOT_TRACK", "true")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s: %(message)s")
    from dataset.reef_demo import create_reef_pool

    seeds = [int(s) for s in str(args.seeds).split(",")]
    strategies = str(args.strategies).split(",")
    results: dict[str, dict[int, list[dict]]] = {s: {} for s in strategies}
    started = time.perf_counter()
    for seed in seeds:
        base = f"loop_bench_s{seed}"
        create_reef_pool(base, args.pool, image_size=args.image_size,
                         image_dir=out / "images" / base, seed=seed, labelled=args.start,
                         val=args.val, test=args.test)  # fmt: skip
        start = start_model(base, seed, args, out)
        for strategy in strategies:
            results[strategy][seed] = run_loop(base, strategy, seed, start, args, out)
    summary = summarize(results, args, out)
    print(summary)
    print(f"Took {(time.perf_counter() - started) / 60:.1f} min; {out / 'summary.md'}, "
          f"{out / 'annotation_loop.png'}")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
