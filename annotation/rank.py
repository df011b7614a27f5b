"""Round step 1, rank: score every candidate with the current model, pick the round's
images, tag them `round_N`, save the FiftyOne view `round_N`, write ranking.csv.

Scores are appended to round_N/scores.jsonl as each image is done (one line per image:
its scores and its feature vector), so an interrupted ranking goes on from the last
image written; a line cut short by a crash is read as not done. Memory: one image at a
time through the model, then the feature vectors (N x D float32, 3 KiB per image at
ViT-B's 768) for the selection.
"""

from __future__ import annotations

import base64
import csv
import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from annotation.pool import Pool, PoolSample, find_pool, round_tag
from annotation.scoring import UNCERTAINTIES, ImageScorer, ImageScores
from annotation.selection import STRATEGIES, Selection, select
from annotation.state import (
    LoopError,
    LoopState,
    Round,
    finish,
    load_state,
    round_dir,
    save_state,
)
from dataset.image_io import ImageReadError, StreamedTextFile, read_rgb, write_bytes_atomic

log = logging.getLogger("annotate")
SCORES_FILE = "scores.jsonl"
RANKING_FILE = "ranking.csv"
RANKING_COLUMNS = (
    "rank", "picked", "sample_id", "filepath", "uncertainty", "entropy", "margin",
    "unsure_share", "coral_share", "colonies", "distance", "score", "error",
)  # fmt: skip


@dataclass(frozen=True)
class RankSettings:
    budget: int = 20
    strategy: str = "hybrid"
    seed: int = 0
    uncertainty: str = "entropy"
    unsure_weight: float = 0.0
    unlabelled_tag: str | None = None

    def check(self) -> None:
        if self.strategy not in STRATEGIES:
            raise LoopError(f"--strategy {self.strategy}: choose one of {', '.join(STRATEGIES)}")
        if self.uncertainty not in UNCERTAINTIES:
            raise LoopError(
                f"--uncertainty {self.uncertainty}: choose {' or '.join(UNCERTAINTIES)}"
            )
        if self.budget < 1:
            raise LoopError(f"--budget {self.budget}: a round needs at least one image")
        if not 0.0 <= self.unsure_weight <= 1.0:
            raise LoopError(f"--unsure-weight {self.unsure_weight}: a share from 0 to 1")


@dataclass
class ScoredSet:
    ids: list[str]
    rows: dict[str, dict]  # sample id -> scores (or {"error": ...})
    features: dict[str, np.ndarray]


def _encode(vector: np.ndarray) -> str:
    return base64.b64encode(vector.astype("<f4").tobytes()).decode()


def _decode(text: str) -> np.ndarray:
    return np.frombuffer(base64.b64decode(text), "<f4").copy()


def read_scores(path: Path) -> tuple[dict[str, dict], dict[str, np.ndarray]]:
    """The lines a previous run finished; a last line cut short is left out."""
    rows, features = {}, {}
    if not path.is_file():
        return rows, features
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            try:
                row = json.loads(line)
            except json.JSONDecodeError:
                break  # the line being written when the run stopped
            vector = row.pop("embedding", None)
            rows[row["sample_id"]] = row
            if vector is not None:
                features[row["sample_id"]] = _decode(vector)
    return rows, features


def _embedding_of(features: dict[str, np.ndarray], sample_id: str) -> dict:
    return {"embedding": _encode(features[sample_id])} if sample_id in features else {}


def _score_row(sample: PoolSample, role: str, scores: ImageScores) -> dict:
    return dict(
        sample_id=sample.sample_id, role=role, entropy=scores.entropy, margin=scores.margin,
        coral_share=scores.coral_share, colonies=scores.colonies,
        unsure_share=scores.unsure_share, embedding=_encode(scores.embedding),
    )  # fmt: skip


def score_pool(pool: Pool, scorer_factory, scores_path: Path) -> ScoredSet:
    """Score every candidate and labelled image not yet in scores_path, appending."""
    rows, features = read_scores(scores_path)
    failed_before = [i for i, row in rows.items() if "error" in row]
    for sample_id in failed_before:  # an image that could not be read is tried again
        del rows[sample_id]
    if rows or failed_before:  # keep the whole, readable lines; appends then start afresh
        kept = [json.dumps({**rows[i], **_embedding_of(features, i)}) + "\n" for i in rows]
        write_bytes_atomic(scores_path, "".join(kept).encode())
    todo = [(s, "candidate") for s in pool.candidates if s.sample_id not in rows]
    todo += [(s, "labelled") for s in pool.labelled if s.sample_id not in rows]
    if rows:
        log.info("Ranking resumes: %d images scored before, %d to go", len(rows), len(todo))
    scorer = scorer_factory() if todo else None
    with open(scores_path, "a", encoding="utf-8") as out:
        for sample, role in tqdm(todo, desc="Scoring", unit="image", disable=not todo):
            try:
                scores = scorer(read_rgb(sample.filepath))
                row = _score_row(sample, role, scores)
            except ImageReadError as exc:
                log.error("%s (sample %s): %s", sample.filepath, sample.sample_id, exc)
                row = dict(sample_id=sample.sample_id, role=role, error=str(exc))
            out.write(json.dumps(row) + "\n")
            out.flush()
            vector = row.pop("embedding", None)
            rows[sample.sample_id] = row
            if vector is not None:
                features[sample.sample_id] = _decode(vector)
    return ScoredSet([s.sample_id for s in pool.candidates], rows, features)


def choose(pool: Pool, scored: ScoredSet, settings: RankSettings) -> tuple[list[str], Selection]:
    """(usable candidate ids, selection over them) from the scores."""
    usable = [i for i in scored.ids if i in scored.features]
    if not usable:
        raise LoopError("no candidate image could be scored; the log names each failure")
    uncertainty = np.array([_uncertainty(scored.rows[i], settings) for i in usable])
    features = np.stack([scored.features[i] for i in usable])
    labelled_ids = [s.sample_id for s in pool.labelled if s.sample_id in scored.features]
    dims = features.shape[1]
    labelled = (
        np.stack([scored.features[i] for i in labelled_ids])
        if labelled_ids
        else np.empty((0, dims))
    )
    selection = select(
        settings.strategy, settings.budget, uncertainty, features, labelled, settings.seed
    )
    return usable, selection


def _uncertainty(row: dict, settings: RankSettings) -> float:
    pixel = row[settings.uncertainty]
    return (1.0 - settings.unsure_weight) * pixel + settings.unsure_weight * row["unsure_share"]


def write_ranking(path: Path, pool: Pool, scored: ScoredSet, usable: list[str],
                  selection: Selection, settings: RankSettings) -> None:  # fmt: skip
    paths = {s.sample_id: s.filepath for s in pool.candidates}
    ranks = selection.rank_of()
    out = StreamedTextFile(path)
    try:
        writer = csv.writer(out)
        writer.writerow(RANKING_COLUMNS)
        for position in selection.order:
            sample_id = usable[position]
            row = scored.rows[sample_id]
            writer.writerow([
                ranks[position], int(ranks[position] <= selection.budget), sample_id,
                paths[sample_id], f"{_uncertainty(row, settings):.6f}",
                f"{row['entropy']:.6f}", f"{row['margin']:.6f}", f"{row['unsure_share']:.4f}",
                f"{row['coral_share']:.4f}", row["colonies"],
                f"{selection.distance[position]:.6f}", f"{selection.score[position]:.6f}", "",
            ])  # fmt: skip
        for sample_id in scored.ids:  # unreadable images: listed, never ranked
            if sample_id not in scored.features:
                error = scored.rows[sample_id].get("error", "not scored")
                writer.writerow(["", 0, sample_id, paths[sample_id], *[""] * 8, error])
        out.commit()
    except BaseException:
        out.abort()
        raise


def start_round(loop_dir: Path, state: LoopState, settings: RankSettings,
                checkpoint: str | None) -> tuple[Round, bool]:  # fmt: skip
    """The round to rank: a new one, or the last one when its ranking was interrupted;
    and whether its earlier scores must go (another model asked for)."""
    last = state.last()
    if last and not last.done("ranked"):
        log.info("Round %d's ranking was interrupted; going on with it", last.number)
        last.strategy, last.budget, last.seed = settings.strategy, settings.budget, settings.seed
        if checkpoint and str(Path(checkpoint).resolve()) != last.checkpoint:
            _check_model(checkpoint)
            log.info("Another model (%s): round %d is scored again", checkpoint, last.number)
            last.checkpoint = str(Path(checkpoint).resolve())
            save_state(loop_dir, state)
            return last, True
        return last, False
    if last and not last.done("recorded"):
        raise LoopError(
            f"round {last.number} is not finished (next step: {last.next_step()}); "
            f"finish it with `annotate.py {_command_of(last.next_step())}` before ranking "
            f"round {last.number + 1}"
        )
    model = str(Path(checkpoint).resolve()) if checkpoint else state.current_checkpoint()
    _check_model(model)
    new = Round(len(state.rounds) + 1, settings.strategy, settings.budget, settings.seed, model)
    state.rounds.append(new)
    save_state(loop_dir, state)
    return new, False


def _check_model(checkpoint: str) -> None:
    if not Path(checkpoint).is_file():
        raise LoopError(f"checkpoint {checkpoint} does not exist")


def tag_round(dataset, loop_dir: Path, state: LoopState, loop_round: Round) -> None:
    """Tag the picked samples and save the view; run again after a crash, it ends the same."""
    tag = round_tag(loop_round.number)
    dataset.select(loop_round.chosen).tag_samples(tag)
    dataset.save_view(tag, dataset.match_tags(tag), overwrite=True)
    finish(loop_dir, state, loop_round, "ranked")


def _command_of(step: str | None) -> str:
    return "send" if step == "sent" else "receive"


def rank(dataset_name: str, loop_dir: Path, config: str | None, checkpoint: str | None,
         settings: RankSettings, label_field: str, device: str | None = None,
         taxonomy: str = "fine") -> tuple[Round, int]:  # fmt: skip
    """Run the rank step of the next round; see the module. Returns the round and the
    number of candidates that could not be read (each named in the log and the CSV)."""
    import fiftyone as fo

    settings.check()
    if not fo.dataset_exists(dataset_name):
        raise LoopError(f"FiftyOne dataset {dataset_name!r} does not exist")
    dataset = fo.load_dataset(dataset_name)
    state = load_state(loop_dir)
    if state is None:
        if not config or not checkpoint:
            raise LoopError(
                f"{loop_dir} holds no loop yet: the first round needs --config and --checkpoint "
                "(the model trained on the images labelled so far)"
            )
        if not Path(config).is_file():
            raise LoopError(f"config {config} does not exist")
        state = LoopState(dataset_name, label_field, str(Path(config).resolve()),
                          str(Path(checkpoint).resolve()), taxonomy)  # fmt: skip
    elif state.dataset != dataset_name:
        raise LoopError(
            f"{loop_dir} is the loop of dataset {state.dataset!r}, not {dataset_name!r}"
        )
    last = state.last()
    if last and not last.done("ranked") and last.chosen:  # picked; stopped while tagging
        tag_round(dataset, loop_dir, state, last)
        return last, 0
    pool = find_pool(dataset, state.label_field, settings.unlabelled_tag)
    if not pool.candidates:
        raise LoopError(
            f"dataset {dataset_name!r} has no unlabelled sample left (none without shapes in "
            f"{state.label_field!r}, a split tag or a round tag)"
        )
    loop_round, rescore = start_round(loop_dir, state, settings, checkpoint)
    folder = round_dir(loop_dir, loop_round)
    if rescore:
        (folder / SCORES_FILE).unlink(missing_ok=True)
    log.info(
        "Round %d: %d candidates, %d labelled training images, model %s",
        loop_round.number, len(pool.candidates), len(pool.labelled), loop_round.checkpoint,
    )  # fmt: skip

    def scorer():
        from inferencer import SemanticSegmenter

        return ImageScorer(SemanticSegmenter(state.config, loop_round.checkpoint, device))

    scored = score_pool(pool, scorer, folder / SCORES_FILE)
    usable, selection = choose(pool, scored, settings)
    write_ranking(folder / RANKING_FILE, pool, scored, usable, selection, settings)
    loop_round.chosen = [usable[i] for i in selection.picked]
    save_state(loop_dir, state)  # the picks first: a crash while tagging resumes with them
    tag_round(dataset, loop_dir, state, loop_round)
    failed = len(scored.ids) - len(usable)
    log.info(
        "Round %d: %d images picked by %s (tag and saved view %r); ranking: %s%s",
        loop_round.number, len(loop_round.chosen), settings.strategy,
        round_tag(loop_round.number), folder / RANKING_FILE,
        f"; {failed} unreadable images left out" if failed else "",
    )  # fmt: skip
    return loop_round, failed
