"""The annotation loop (annotate.py over annotation/): ranking against independent
computations, and whole rounds through the file path (rank, send the CVAT archive, an
edited export back, prepare, fine-tune, evaluate) run as a user runs them."""

from __future__ import annotations

import csv
import json
import logging
import math
import uuid
import xml.etree.ElementTree as ET
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TEST_CONFIG

from annotation import selection
from annotation.pool import Pool, PoolSample
from annotation.rank import RankSettings, ScoredSet, choose, read_scores, score_pool
from annotation.scoring import ImageScores, pixel_uncertainty

ROOT = Path(__file__).resolve().parents[1]


# ------------------------------------------------------------------ the numbers of a ranking


def reference_uncertainty(probs: np.ndarray) -> tuple[float, float]:
    """Entropy and margin by hand, pixel by pixel."""
    classes, height, width = probs.shape
    entropies, margins, coral = [], [], []
    for y in range(height):
        for x in range(width):
            p = probs[:, y, x]
            coral.append(int(np.argmax(p)) > 0)
            entropies.append(-sum(v * math.log(v) for v in p if v > 0) / math.log(classes))
            top = sorted(p, reverse=True)
            margins.append(1 - (top[0] - top[1]))
    use = coral if any(coral) else [True] * len(coral)
    pick = [i for i, u in enumerate(use) if u]
    return float(np.mean([entropies[i] for i in pick])), float(np.mean([margins[i] for i in pick]))


@pytest.mark.parametrize("background_only", [False, True])
def test_entropy_and_margin_equal_a_pixel_by_pixel_computation(background_only):
    rng = np.random.default_rng(4)
    logits = rng.normal(0, 2, (5, 6, 7))
    if background_only:
        logits[0] = logits[1:].max(0) + 1.0  # no pixel predicted as coral: every pixel counts
    else:
        logits[0, :3] += 20  # the top half is background and must not count
    probs = np.exp(logits) / np.exp(logits).sum(0)
    entropy, margin, coral_share = pixel_uncertainty(torch.from_numpy(probs))
    want_entropy, want_margin = reference_uncertainty(probs)
    assert entropy == pytest.approx(want_entropy, rel=1e-5)
    assert margin == pytest.approx(want_margin, rel=1e-5)
    assert coral_share == pytest.approx(float((probs.argmax(0) > 0).mean()))
    if not background_only:  # leaving the background out changes the number
        everywhere = -(probs * np.log(probs)).sum(0).mean() / math.log(5)
        assert abs(everywhere - entropy) > 0.01


def reference_k_center(features, labelled, budget, weights=None):
    """Greedy k-center from the definition: a full distance matrix, recomputed per pick."""
    weights = np.ones(len(features)) if weights is None else weights
    centres = list(labelled)
    picked = []
    for _ in range(budget):
        best, best_score = None, -1.0
        for i, f in enumerate(features):
            if i in picked:
                continue
            if centres:
                nearest = min(float(np.sqrt(((f - c) ** 2).sum())) for c in centres)
            else:
                nearest = float(np.sqrt(((f - features.mean(0)) ** 2).sum()))
            if weights[i] * nearest > best_score:
                best, best_score = i, weights[i] * nearest
        picked.append(best)
        centres.append(features[best])
    return picked


@pytest.mark.parametrize("labelled_count", [0, 4])
def test_diversity_and_hybrid_equal_k_center_from_its_definition(labelled_count, monkeypatch):
    monkeypatch.setattr(selection, "CHUNK_ROWS", 7)  # the chunked distances must not matter
    rng = np.random.default_rng(11)
    features = rng.normal(size=(30, 6))
    labelled = rng.normal(size=(labelled_count, 6))
    uncertainty = rng.uniform(0.1, 1.0, 30)
    diverse = selection.select("diversity", 8, uncertainty, features, labelled)
    assert diverse.picked.tolist() == reference_k_center(features, labelled, 8)
    hybrid = selection.select("hybrid", 8, uncertainty, features, labelled)
    assert hybrid.picked.tolist() == reference_k_center(features, labelled, 8, uncertainty)
    assert hybrid.picked.tolist() != diverse.picked.tolist()  # the weights do act
    for chosen in (diverse, hybrid):  # every candidate ranked once
        assert sorted(chosen.order.tolist()) == list(range(30))
        assert sorted(chosen.rank_of().tolist()) == list(range(1, 31))


def test_uncertainty_and_random_orders():
    rng = np.random.default_rng(2)
    uncertainty = rng.uniform(size=12)
    features = rng.normal(size=(12, 3))
    by_uncertainty = selection.select("uncertainty", 4, uncertainty, features, np.empty((0, 3)))
    assert by_uncertainty.order.tolist() == np.argsort(-uncertainty, kind="stable").tolist()
    first = selection.select("random", 4, uncertainty, features, np.empty((0, 3)), seed=5)
    again = selection.select("random", 4, uncertainty, features, np.empty((0, 3)), seed=5)
    other = selection.select("random", 4, uncertainty, features, np.empty((0, 3)), seed=6)
    assert first.picked.tolist() == again.picked.tolist() != other.picked.tolist()
    with pytest.raises(ValueError, match="choose one of"):
        selection.select("entropy", 4, uncertainty, features, np.empty((0, 3)))


def test_the_rank_step_picks_what_the_independent_computation_picks():
    """rank's plumbing (score rows, labelled set, uncertainty column) on fixed features."""
    rng = np.random.default_rng(8)
    candidates = [PoolSample(f"c{i}", f"/c{i}.jpg") for i in range(15)]
    labelled = [PoolSample(f"l{i}", f"/l{i}.jpg") for i in range(3)]
    rows, features = {}, {}
    for sample in candidates + labelled:
        vector = rng.normal(size=4)
        features[sample.sample_id] = vector / np.linalg.norm(vector)
        rows[sample.sample_id] = dict(entropy=rng.uniform(), margin=rng.uniform(),
                                      unsure_share=rng.uniform())  # fmt: skip
    scored = ScoredSet([c.sample_id for c in candidates], rows, features)
    pool = Pool(candidates, labelled)
    usable, chosen = choose(pool, scored, RankSettings(budget=5, uncertainty="margin"))
    matrix = np.stack([features[c.sample_id] for c in candidates])
    margin = np.array([rows[c.sample_id]["margin"] for c in candidates])
    known = [features[s.sample_id] for s in labelled]
    assert [usable[i] for i in chosen.picked] == [
        f"c{i}" for i in reference_k_center(matrix, known, 5, margin)
    ]


def test_an_interrupted_scoring_goes_on_from_the_last_whole_line(tmp_path, monkeypatch):
    samples = [PoolSample(f"s{i}", f"/s{i}.jpg") for i in range(5)]
    calls = []

    class Scorer:
        def __call__(self, image):
            calls.append(image.shape)
            return ImageScores(0.5, 0.4, 0.3, 2, 0.0, np.ones(3, np.float32) / math.sqrt(3))

    path = tmp_path / "scores.jsonl"
    images = {f"/s{i}.jpg": np.zeros((4, 4, 3), np.uint8) for i in range(5)}
    monkeypatch.setattr("annotation.rank.read_rgb", lambda p: images[p])
    score_pool(Pool(samples[:3], []), Scorer, path)
    assert len(calls) == 3
    with open(path, "a") as handle:  # a crash in the middle of the fourth line
        handle.write('{"sample_id": "s3", "entro')
    scored = score_pool(Pool(samples, []), Scorer, path)
    assert len(calls) == 5  # only s3 and s4 were scored again
    rows, vectors = read_scores(path)
    assert sorted(rows) == [f"s{i}" for i in range(5)] and set(vectors) == set(rows)
    assert scored.features["s4"] == pytest.approx(np.ones(3) / math.sqrt(3))


def test_an_unreadable_candidate_is_named_in_the_ranking_and_never_picked(tmp_path):
    import cv2

    from annotation.rank import write_ranking

    good = []
    for index in range(4):
        path = tmp_path / f"quadrat_{index}.jpg"
        assert cv2.imwrite(str(path), np.full((16, 16, 3), 40 * index, np.uint8))
        good.append(PoolSample(f"s{index}", str(path)))
    cut = tmp_path / "cut_short.jpg"
    cut.write_bytes(Path(good[0].filepath).read_bytes()[:200])  # a transfer that stopped
    broken = PoolSample("broken", str(cut))
    vectors = iter(np.eye(5, dtype=np.float32))

    class Scorer:
        def __call__(self, image):
            return ImageScores(float(image.mean()) / 255, 0.1, 0.5, 1, 0.0, next(vectors))

    pool = Pool([good[0], broken, *good[1:]], [])
    scored = score_pool(pool, Scorer, tmp_path / "scores.jsonl")
    assert "cut_short.jpg" in scored.rows["broken"]["error"]
    settings = RankSettings(budget=10, strategy="uncertainty")
    usable, chosen = choose(pool, scored, settings)
    write_ranking(tmp_path / "ranking.csv", pool, scored, usable, chosen, settings)
    with open(tmp_path / "ranking.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["sample_id"] for r in rows] == ["s3", "s2", "s1", "s0", "broken"]
    assert rows[-1]["rank"] == "" and rows[-1]["picked"] == "0"
    assert "cut_short.jpg" in rows[-1]["error"]


# ------------------------------------------------------------------ whole rounds, as run


def _two_genus_checkpoint(random_checkpoint: Path, target: Path) -> Path:
    """The random model, biased so Acropora and Porites win its pixels between them: its
    predictions then hold colonies (a random model's probabilities stay under the fusion
    rule's floor everywhere)."""
    state = torch.load(random_checkpoint, weights_only=True)
    classes = state["meta"]["dataset_meta"]["classes"]
    bias = state["state_dict"]["decode_head.conv_seg.bias"]
    bias[classes.index("Acropora")] += 6.0
    bias[classes.index("Porites")] += 6.0
    torch.save(state, target)
    return target


@pytest.fixture(scope="module")
def loop(fiftyone, random_semantic_checkpoint, tmp_path_factory):
    from dataset.reef_demo import create_reef_pool

    tmp = tmp_path_factory.mktemp("loop")
    name = f"loop_test_pool_{uuid.uuid4().hex[:8]}"
    dataset = create_reef_pool(name, 16, image_size=112, image_dir=tmp / "images", seed=3,
                               labelled=3, val=2, test=2)  # fmt: skip
    config = tmp / "loop_config.py"
    # the suite's deterministic tiny config (conftest.py); the loop overrides its data root
    config.write_text(TEST_CONFIG.format(root=ROOT, data_root=tmp / "data" / name, num_classes=17))
    checkpoint = _two_genus_checkpoint(random_semantic_checkpoint, tmp / "start.pth")
    return dict(tmp=tmp, name=name, dataset=dataset, config=config, checkpoint=checkpoint,
                loop_dir=tmp / "loop")  # fmt: skip


def annotate(*argv) -> int:
    import annotate as command

    return command.main([str(a) for a in argv])


def _loop_json(loop) -> dict:
    return json.loads((loop["loop_dir"] / "loop.json").read_text())


def _extract(archive: Path, folder: Path) -> Path:
    with zipfile.ZipFile(archive) as handle:
        handle.extractall(folder)
    return folder


def _shapes(polylines) -> list[tuple[str, np.ndarray]]:
    return sorted(
        ((p.label, np.asarray(p.points[0], float)) for p in polylines),
        key=lambda s: (s[0], round(float(s[1][:, 0].mean()), 2)),
    )


@pytest.fixture(scope="module")
def first_round(loop):
    """Round 1 ranked and sent (module-wide: the later tests build on it)."""
    loop_dir = loop["loop_dir"]
    model = ("--config", loop["config"], "--checkpoint", loop["checkpoint"])
    assert annotate("rank", loop["name"], "--loop-dir", loop_dir, *model, "--budget", 3) == 0
    assert annotate("send", loop["name"], "--loop-dir", loop_dir) == 0
    return _loop_json(loop)["rounds"][0]


def test_rank_tags_the_round_saves_its_view_and_ranks_every_candidate(loop, first_round):
    dataset = loop["dataset"]
    dataset.reload()
    chosen = first_round["chosen"]
    assert len(chosen) == 3
    assert sorted(dataset.match_tags("round_1").values("id")) == sorted(chosen)
    assert dataset.has_saved_view("round_1")
    with open(loop["loop_dir"] / "round_1" / "ranking.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == 16 - 3 - 2 - 2  # every unlabelled sample, nothing else
    assert [int(r["rank"]) for r in rows] == list(range(1, len(rows) + 1))
    assert [r["sample_id"] for r in rows if r["picked"] == "1"] == chosen
    assert all(0.0 <= float(r["entropy"]) <= 1.0 for r in rows)


def test_a_second_rank_before_the_round_is_received_is_refused(loop, first_round, caplog):
    with caplog.at_level(logging.ERROR):
        assert annotate("rank", loop["name"], "--loop-dir", loop["loop_dir"]) == 1
    assert "round 1 is not finished (next step: received)" in caplog.text


def test_the_archive_reads_back_in_fiftyone_with_every_predicted_shape(loop, first_round):
    import fiftyone as fo

    from annotation.send import PREDICTIONS_FIELD

    archive = loop["loop_dir"] / "round_1" / "cvat_round_1.zip"
    folder = _extract(archive, loop["tmp"] / "sent_archive")
    imported = fo.Dataset.from_dir(
        dataset_type=fo.types.CVATImageDataset, data_path=str(folder / "images"),
        labels_path=str(folder / "annotations.xml"), label_field="cvat",
    )  # fmt: skip
    sent = json.loads((loop["loop_dir"] / "round_1" / "sent.json").read_text())
    by_name = {Path(p).name: s for p, s in zip(*imported.values(["filepath", "id"]), strict=True)}
    dataset = loop["dataset"]
    predictions = dict(zip(*dataset.values(["id", PREDICTIONS_FIELD]), strict=True))
    shapes = 0
    for sample_id, entry in sent.items():
        sample = imported[by_name[entry["name"]]]
        back = sample["cvat_polylines"].polylines if sample["cvat_polylines"] else []
        predicted = predictions[sample_id].polylines
        assert len(back) == len(predicted)
        for (label, points), (want_label, want) in zip(_shapes(back), _shapes(predicted),
                                                       strict=True):  # fmt: skip
            assert label == want_label  # the taxonomy's name, exactly
            assert points.shape == want.shape
            assert np.abs(points - want).max() * 112 <= 0.5 + 1e-6  # CVAT keeps pixels
        shapes += len(predicted)
    assert shapes >= 3  # the round did send colonies to correct
    fo.delete_dataset(imported.name)


def _edited_export(loop, target: Path, edit) -> Path:
    """The sent archive as CVAT would export it after `edit(root)` changed its XML."""
    archive = loop["loop_dir"] / "round_1" / "cvat_round_1.zip"
    with zipfile.ZipFile(archive) as handle:
        root = ET.fromstring(handle.read("annotations.xml"))
    edit(root)
    with zipfile.ZipFile(target, "w") as out:
        out.writestr("annotations.xml", ET.tostring(root, encoding="unicode"))
    return target


def test_an_export_missing_a_sample_or_with_unknown_labels_stops_the_round(
    loop, first_round, caplog
):
    sent = json.loads((loop["loop_dir"] / "round_1" / "sent.json").read_text())
    gone = sent[first_round["chosen"][1]]["name"]

    def drop(root):
        root.remove(next(i for i in root.iter("image") if i.get("name") == gone))

    export = _edited_export(loop, loop["tmp"] / "missing.zip", drop)
    with caplog.at_level(logging.ERROR):
        assert annotate("receive", loop["name"], "--loop-dir", loop["loop_dir"],
                        "--export", export) == 1  # fmt: skip
    assert gone in caplog.text and "missing or renamed" in caplog.text

    def rename(root):
        image = next(iter(root.iter("image")))
        ET.SubElement(image, "polygon", label="Stylophoraa", points="1,1;9,1;9,9",
                      occluded="0", source="manual", z_order="0")  # fmt: skip

    caplog.clear()
    export = _edited_export(loop, loop["tmp"] / "unknown.zip", rename)
    with caplog.at_level(logging.ERROR):
        assert annotate("receive", loop["name"], "--loop-dir", loop["loop_dir"],
                        "--export", export) == 1  # fmt: skip
    assert "'Stylophoraa'" in caplog.text
    assert "received" not in _loop_json(loop)["rounds"][0]["steps"]  # nothing was taken


@pytest.fixture(scope="module")
def received(loop, first_round):
    """Round 1 received from an export where a person changed two of the three images."""
    sent = json.loads((loop["loop_dir"] / "round_1" / "sent.json").read_text())
    # a person relabels a shape and draws one in the first image with shapes, deletes
    # every shape of the second, leaves the third as it came
    with_shapes = [i for i in first_round["chosen"] if sent[i]["shapes"]]
    assert len(with_shapes) >= 2, "the biased model should predict colonies in most images"
    relabelled, emptied = with_shapes[:2]
    (untouched,) = set(first_round["chosen"]) - {relabelled, emptied}
    old_label = []
    dataset = loop["dataset"]
    before = {
        s: (t, p) for s, t, p in zip(*dataset.values(["id", "tags", "polylines"]), strict=True)
    }

    def edit(root):
        for image in root.iter("image"):
            if image.get("name") == sent[relabelled]["name"]:
                shapes = list(image)
                old_label.append(shapes[0].get("label"))
                shapes[0].set("label", "Pocillopora")
                ET.SubElement(image, "polygon", label="Fungia", points="10,10;30,10;30,30;10,30",
                              occluded="0", source="manual", z_order="0")  # fmt: skip
            if image.get("name") == sent[emptied]["name"]:
                for shape in list(image):
                    image.remove(shape)

    export = _edited_export(loop, loop["tmp"] / "corrected.zip", edit)
    short = ("--epochs", 1, "--image-size", 112, "--data-root", loop["tmp"] / "data")
    code = annotate(
        "receive", loop["name"], "--loop-dir", loop["loop_dir"], "--export", export, *short
    )
    dataset.reload()
    return dict(code=code, before=before, relabelled=relabelled, emptied=emptied,
                untouched=untouched, sent=sent, old_label=old_label[0])  # fmt: skip


def test_receive_updates_exactly_the_edited_samples(loop, received):
    from annotation.send import PREDICTIONS_FIELD

    assert received["code"] == 0
    dataset = loop["dataset"]
    after = {
        s: (t, p) for s, t, p in zip(*dataset.values(["id", "tags", "polylines"]), strict=True)
    }
    predictions = dict(zip(*dataset.values(["id", PREDICTIONS_FIELD]), strict=True))
    chosen = {received["relabelled"], received["emptied"], received["untouched"]}
    for sample_id, (tags, polylines) in received["before"].items():
        if sample_id not in chosen:  # every other sample exactly as before
            assert after[sample_id][0] == tags
            assert (after[sample_id][1] is None) == (polylines is None)
            if polylines is not None:
                assert _same(after[sample_id][1].polylines, polylines.polylines)
    relabelled = after[received["relabelled"]][1].polylines
    predicted = predictions[received["relabelled"]].polylines
    assert len(relabelled) == len(predicted) + 1
    labels = [p.label for p in predicted]
    labels.remove(received["old_label"])
    assert sorted(p.label for p in relabelled) == sorted([*labels, "Pocillopora", "Fungia"])
    assert after[received["emptied"]][1].polylines == []
    untouched = after[received["untouched"]][1].polylines
    assert [label for label, _ in _shapes(untouched)] == [
        label for label, _ in _shapes(predictions[received["untouched"]].polylines)
    ]
    for sample_id in chosen:
        assert "train" in after[sample_id][0] and "round_1" in after[sample_id][0]
    state = _loop_json(loop)["rounds"][0]
    assert state["edited"] == 2 and state["added"] == {"train": 3, "val": 0}


def _same(one, other) -> bool:
    return [(p.label, p.points) for p in one] == [(p.label, p.points) for p in other]


def test_receive_prepares_fine_tunes_evaluates_and_records_the_round(loop, received):
    state = _loop_json(loop)["rounds"][0]
    assert list(state["steps"]) == [
        "ranked", "sent", "received", "prepared", "trained", "tested", "recorded",
    ]  # fmt: skip
    prepared = loop["tmp"] / "data" / loop["name"]
    assert len(list((prepared / "images" / "train").iterdir())) == 3 + 3
    assert len(list((prepared / "images" / "test").iterdir())) == 2
    assert Path(state["new_checkpoint"]).is_file()
    with open(loop["loop_dir"] / "rounds.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["round"], r["labelled_images"], r["new_images"], r["edited_images"])
            for r in rows] == [("0", "3", "0", "0"), ("1", "6", "3", "2")]  # fmt: skip
    metrics = json.loads((loop["loop_dir"] / "round_1" / "test" / "metrics.json").read_text())
    assert float(rows[1]["mIoU"]) == pytest.approx(metrics["mIoU"])
    assert (loop["loop_dir"] / "rounds.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.parametrize("weighted", [True, False])
def test_a_round_weighs_its_loss_by_the_loops_own_class_frequencies(tmp_path, weighted):
    """A config with use_class_weights computes its weights when loaded, from its own data
    root; the round's config carries those of the loop's prepared folder instead."""
    from mmengine.config import Config

    from annotation.finetune import write_finetune_config
    from dataset.info import INFO_FILE, read_dataset_info, write_dataset_info
    from dataset.taxonomy import load_taxonomy

    fine = load_taxonomy("fine")

    def prepared_folder(name: str, rare_class: int) -> Path:
        counts = np.zeros(256, np.int64)
        counts[: fine.num_classes] = 1000
        counts[rare_class] = 10
        folder = tmp_path / name
        folder.mkdir()
        write_dataset_info(folder, fine, {"train": counts}, {"train": 1}, {}, "the test")
        return folder

    base_root, loop_root = prepared_folder("base", 3), prepared_folder("loop", 7)
    base_weights = read_dataset_info(base_root / INFO_FILE)["class_weights"]
    loop_weights = read_dataset_info(loop_root / INFO_FILE)["class_weights"]
    assert base_weights != loop_weights  # the check below can tell them apart
    base = tmp_path / "user_config.py"
    recipe = ROOT / "configs" / "dinov2_vitb14_coralsegv4_ms_config_segformer.py"
    base.write_text(
        f"_base_ = [{str(recipe)!r}]\n"
        "from dataset.info import dataset_class_info\n"
        f"data_root = {str(base_root)!r}\n"
        "dataset_info = dataset_class_info(data_root, 'fine')\n"
        f"use_class_weights = {weighted}\n"
        "model = dict(decode_head=dict(loss_decode=dict(\n"
        "    class_weight=dataset_info['class_weights'] if use_class_weights else None)))\n"
    )
    assert Config.fromfile(base).model.decode_head.loss_decode.class_weight == (
        base_weights if weighted else None
    )
    round_folder = tmp_path / "round_1"
    round_folder.mkdir()
    config = Config.fromfile(write_finetune_config(round_folder, str(base), str(loop_root), 4))
    assert config.train_dataloader.dataset.data_root == str(loop_root.resolve())
    loss = config.model.decode_head.loss_decode
    assert loss.class_weight == (loop_weights if weighted else None)
    assert loss.type == "CrossEntropyLoss"  # the rest of the user's loss is kept
    if weighted:  # two losses: the loop cannot tell which to weigh, and says so
        from annotation.state import LoopError

        two = tmp_path / "two_losses.py"
        two.write_text(
            f"_base_ = [{str(base)!r}]\n"
            "model = dict(decode_head=dict(loss_decode=[\n"
            "    dict(type='CrossEntropyLoss', loss_weight=1.0),\n"
            "    dict(type='DiceLoss', loss_weight=0.5)]))\n"
        )
        with pytest.raises(LoopError, match="not one loss"):
            write_finetune_config(round_folder, str(two), str(loop_root), 4)


def test_a_second_receive_of_the_same_round_is_refused(loop, received, caplog):
    export = loop["tmp"] / "corrected.zip"
    mtime = (loop["loop_dir"] / "rounds.csv").stat().st_mtime_ns
    with caplog.at_level(logging.ERROR):
        assert annotate("receive", loop["name"], "--loop-dir", loop["loop_dir"],
                        "--export", export) == 1  # fmt: skip
    assert "refusing to do it again" in caplog.text
    assert (loop["loop_dir"] / "rounds.csv").stat().st_mtime_ns == mtime


@pytest.fixture(scope="module")
def second_round(loop, received):
    assert annotate("rank", loop["name"], "--loop-dir", loop["loop_dir"], "--budget", 2,
                    "--strategy", "random") == 0  # fmt: skip
    return _loop_json(loop)


def test_the_next_round_ranks_with_the_fine_tuned_model(second_round):
    state = second_round
    assert state["rounds"][1]["checkpoint"] == state["rounds"][0]["new_checkpoint"]
    first = set(state["rounds"][0]["chosen"])
    assert len(state["rounds"][1]["chosen"]) == 2 and not first & set(state["rounds"][1]["chosen"])


def test_a_cvat_server_out_of_reach_is_named_and_the_round_stays_unsent(loop, second_round):
    """The live path runs FiftyOne's annotation API for real up to the connection: the
    label schema passes FiftyOne's checks, the unreachable server is named, no half
    registered run stays behind, and the archive can still be written afterwards."""
    from annotation.send import send
    from annotation.state import LoopError

    # FiftyOne reads FIFTYONE_CVAT_* once, at import: the login goes in as arguments here
    login = dict(url="http://127.0.0.1:9", username="nobody", password="nothing")
    with pytest.raises(LoopError, match="CVAT at http://127.0.0.1:9 did not take") as failed:
        send(loop["name"], loop["loop_dir"], cvat=True, cvat_options=login)
    assert "ConnectionError" in str(failed.value)
    assert "round_2" not in loop["dataset"].list_annotation_runs()
    assert "sent" not in _loop_json(loop)["rounds"][1]["steps"]
    assert annotate("send", loop["name"], "--loop-dir", loop["loop_dir"]) == 0
    assert (loop["loop_dir"] / "round_2" / "cvat_round_2.zip").is_file()


def test_a_rank_stopped_while_tagging_tags_the_same_picks_when_run_again(
    loop, tmp_path, monkeypatch
):
    import fiftyone as fo

    import annotation.rank as rank_module
    from dataset.reef_demo import create_reef_pool

    name = f"loop_resume_{uuid.uuid4().hex[:8]}"
    create_reef_pool(name, 10, image_size=64, image_dir=tmp_path / "images", seed=5,
                     labelled=2, val=1, test=1)  # fmt: skip
    loop_dir = tmp_path / "loop"
    model = ("--config", loop["config"], "--checkpoint", loop["checkpoint"])

    def crash(*args):
        raise RuntimeError("the machine went down while tagging")

    monkeypatch.setattr(rank_module, "tag_round", crash)
    with pytest.raises(RuntimeError, match="went down"):
        annotate("rank", name, "--loop-dir", loop_dir, *model, "--budget", 3)
    monkeypatch.undo()
    state = json.loads((loop_dir / "loop.json").read_text())["rounds"][0]
    assert len(state["chosen"]) == 3 and "ranked" not in state["steps"]
    scores = (loop_dir / "round_1" / "scores.jsonl").stat().st_mtime_ns
    assert annotate("rank", name, "--loop-dir", loop_dir) == 0
    dataset = fo.load_dataset(name)
    assert sorted(dataset.match_tags("round_1").values("id")) == sorted(state["chosen"])
    assert (loop_dir / "round_1" / "scores.jsonl").stat().st_mtime_ns == scores  # not rescored
    assert "ranked" in json.loads((loop_dir / "loop.json").read_text())["rounds"][0]["steps"]


def test_the_demos_annotation_loop_runs_as_written(tmp_path, random_semantic_checkpoint):
    """Step 10 of demo.sh, its lines as they are: a pool, one round through the file path."""
    import os
    import re
    import subprocess
    import sys

    import fiftyone as fo

    text = (ROOT / "demo.sh").read_text()
    lines = re.search(r"# >>> annotation loop\n(.*?)# <<< annotation loop", text, re.S).group(1)
    work_dir, loop_dir = tmp_path / "work", tmp_path / "loop"
    work_dir.mkdir()
    (work_dir / "best_mIoU.pth").symlink_to(random_semantic_checkpoint)
    pool = f"demo_pool_{uuid.uuid4().hex[:8]}"
    env = dict(os.environ, POOL=pool, LOOP_DIR=str(loop_dir), CONFIG="configs/reef_demo_tiny.py",
               WORK_DIR=str(work_dir), DATA_ROOT=str(tmp_path / "prepared"),
               CORAL_DEMO_DIR=str(tmp_path / "demo"), PY=sys.executable)  # fmt: skip
    script = 'set -euo pipefail\npython() { "$PY" "$@"; }\n' + lines
    run = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=900
    )
    assert run.returncode == 0, run.stderr[-3000:]
    state = json.loads((loop_dir / "loop.json").read_text())
    assert list(state["rounds"][0]["steps"])[-1] == "recorded"
    assert (loop_dir / "round_1" / "cvat_round_1.zip").is_file()
    with open(loop_dir / "rounds.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["round"], r["labelled_images"]) for r in rows] == [("0", "8"), ("1", "12")]
    dataset = fo.load_dataset(pool)
    truth = dict(zip(*dataset.values(["id", "ground_truth"]), strict=True))
    corrected = dict(zip(*dataset.values(["id", "polylines"]), strict=True))
    for sample_id in state["rounds"][0]["chosen"]:  # the true shapes, to CVAT's pixel
        want = sorted((p.label, len(p.points[0])) for p in truth[sample_id].polylines)
        assert sorted((p.label, len(p.points[0])) for p in corrected[sample_id].polylines) == want
