"""Peak memory and time of picking a round among many candidates (the selection half of
`annotate.py rank`): read the scores file, select with each strategy, write ranking.csv.

    python bench/annotation_rank_bench.py                      # 1000, 10000, 50000 candidates
    python bench/annotation_rank_bench.py --sizes 500 --dims 96   # smoke

The scoring half holds one image at a time (the model's own memory); what grows with
the pool is this half: the feature vectors (D float32 each, D = 768 for ViT-B), the
scores, and the distances of greedy k-center. Each size is a synthetic scores.jsonl (as
rank writes it: one line per image, its scores and base64 feature vector, plus 200
labelled images), read and ranked in a fresh process whose peak resident set comes from
the kernel (batch_memory_bench.peak_rss_of). Prints a table and one JSON line.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

RANK_ONE = """
import sys, time
from pathlib import Path
from annotation.pool import Pool, PoolSample
from annotation.rank import RankSettings, ScoredSet, choose, read_scores, write_ranking
folder, strategy, budget = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])
started = time.perf_counter()
rows, features = read_scores(folder / "scores.jsonl")
candidates = [PoolSample(i, f"/pool/{i}.jpg") for i, r in rows.items() if r["role"] == "candidate"]
labelled = [PoolSample(i, f"/pool/{i}.jpg") for i, r in rows.items() if r["role"] == "labelled"]
pool = Pool(candidates, labelled)
scored = ScoredSet([c.sample_id for c in candidates], rows, features)
settings = RankSettings(budget=budget, strategy=strategy)
usable, selection = choose(pool, scored, settings)
write_ranking(folder / f"ranking_{strategy}.csv", pool, scored, usable, selection, settings)
print(f"{time.perf_counter() - started:.2f}", file=sys.stderr)
"""


def write_scores(path: Path, candidates: int, labelled: int, dims: int, seed: int = 0) -> None:
    import numpy as np

    rng = np.random.default_rng(seed)
    with open(path, "w", encoding="utf-8") as out:
        for index in range(candidates + labelled):
            vector = rng.normal(size=dims).astype("<f4")
            vector /= np.linalg.norm(vector)
            row = dict(
                sample_id=f"s{index:06d}", role="candidate" if index < candidates else "labelled",
                entropy=float(rng.uniform()), margin=float(rng.uniform()),
                coral_share=0.5, colonies=3, unsure_share=0.0,
                embedding=base64.b64encode(vector.tobytes()).decode(),
            )  # fmt: skip
            out.write(json.dumps(row) + "\n")


def main(argv: list[str] | None = None) -> int:
    from batch_memory_bench import peak_rss_of

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,50000")
    parser.add_argument("--dims", type=int, default=768)
    parser.add_argument("--budget", type=int, default=20)
    parser.add_argument("--strategies", default="hybrid,random")
    args = parser.parse_args(argv)
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    results = []
    print(f"{'candidates':>10} {'strategy':>9} {'scores file MiB':>15} {'peak RSS MiB':>12} "
          f"{'seconds':>8}")  # fmt: skip
    for size in (int(s) for s in args.sizes.split(",")):
        with tempfile.TemporaryDirectory() as folder:
            write_scores(Path(folder) / "scores.jsonl", size, 200, args.dims)
            file_mib = (Path(folder) / "scores.jsonl").stat().st_size / 2**20
            for strategy in args.strategies.split(","):
                command = [sys.executable, "-c", RANK_ONE, folder, strategy, str(args.budget)]
                peak, _, stderr = peak_rss_of(command, env, ROOT)
                seconds = float(stderr.strip().splitlines()[-1])
                results.append(dict(candidates=size, strategy=strategy, dims=args.dims,
                                    scores_mib=round(file_mib), peak_rss_mib=peak,
                                    seconds=seconds))  # fmt: skip
                print(f"{size:>10} {strategy:>9} {file_mib:>15.0f} {peak:>12} {seconds:>8.2f}")
    print(json.dumps(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
