"""Fault suite: outputs never cost a user a file (dataset/output_safety.py and its users).

Each case is what a user does by mistake: points --output-dir at a folder of their own, at
the parent of the input, at a folder another tool made; adds a file to a result folder and
reruns with --overwrite; kills a run. Every refusal must leave every byte where it was.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from test_analysis_synthetic import ACROPORA, FINE, PORITES, disc, write_png

import reef_stats
from dataset.inference_outputs import RUN_FILE, OutputConflictError, OutputFolder
from dataset.output_safety import (
    MARKER,
    OutputRefusedError,
    check_replaceable,
    made_by,
    staged_folder,
    write_marker,
)

SHAPE = (64, 64)


def _tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def _class_maps(folder: Path) -> Path:
    for k in range(2):
        class_map = np.zeros(SHAPE, np.uint8)
        class_map[disc(SHAPE, (20, 20 + 10 * k), 9)] = ACROPORA
        class_map[disc(SHAPE, (45, 45), 8)] = PORITES
        write_png(folder / f"quadrat_{k}.png", class_map)
    return folder


@pytest.fixture
def results(tmp_path) -> Path:
    """The issue's layout: results/maps (class maps), results/notes.txt, a classes.txt."""
    root = tmp_path / "results"
    _class_maps(root / "maps")
    (root / "notes.txt").write_text("field notes: site A, 2026-11-30")
    (tmp_path / "classes.txt").write_text("\n".join(FINE.classes) + "\n")
    return root


def _summarize(maps: Path, out: Path, *extra: str) -> int:
    classes = maps.parent.parent / "classes.txt"
    argv = ["summarize", str(maps), "--classes", str(classes), "--output-dir", str(out)]
    return reef_stats.main([*argv, "--points", "0", *extra])


def test_overwrite_never_replaces_the_folder_that_holds_the_input(results, capsys):
    before = _tree(results)
    assert _summarize(results / "maps", results, "--overwrite") == 2
    err = capsys.readouterr().err
    assert "lie inside each other" in err and str(results / "maps") in err
    assert _tree(results) == before, "the maps and the notes are where they were"


def test_an_output_inside_the_input_is_refused(results, capsys):
    assert _summarize(results / "maps", results / "maps" / "stats") == 2
    assert "Choose a --output-dir outside the inputs" in capsys.readouterr().err
    assert not (results / "maps" / "stats").exists()


def test_overwrite_refuses_a_folder_reef_stats_did_not_make(results, tmp_path, capsys):
    mine = tmp_path / "my_folder"
    mine.mkdir()
    (mine / "thesis.docx").write_bytes(b"three years of work")
    assert _summarize(results / "maps", mine, "--overwrite") == 2
    err = capsys.readouterr().err
    assert f"no {MARKER} marker" in err and "Move or remove it yourself" in err
    assert (mine / "thesis.docx").read_bytes() == b"three years of work"
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.docx"]


def test_overwrite_replaces_its_own_folder_and_refuses_once_a_file_is_added(results, tmp_path):
    out = tmp_path / "stats"
    assert _summarize(results / "maps", out) == 0
    assert made_by(out) == "reef_stats.py" and (out / "report.html").is_file()
    first = _tree(out)
    assert _summarize(results / "maps", out, "--overwrite") == 0
    assert _tree(out).keys() == first.keys()
    (out / "figures" / "my_edit.png").write_bytes(b"an edited figure")
    assert _summarize(results / "maps", out, "--overwrite") == 2
    assert (out / "figures" / "my_edit.png").read_bytes() == b"an edited figure"


def test_overwrite_refuses_a_folder_with_a_file_edited_since_the_tool_wrote_it(
    results, tmp_path, capsys
):
    """A cover.csv corrected by hand in a spreadsheet is not replaced by the next
    --overwrite; a marker from before sizes and times were kept still allows it."""
    out = tmp_path / "stats"
    assert _summarize(results / "maps", out) == 0
    edited = (out / "cover.csv").read_text().replace("Acropora", "Acropora (checked)")
    (out / "cover.csv").write_text(edited)
    before = _tree(out)
    assert _summarize(results / "maps", out, "--overwrite") == 2
    assert "files changed since reef_stats.py wrote them (cover.csv)" in capsys.readouterr().err
    assert _tree(out) == before
    marker = json.loads((out / MARKER).read_text())
    marker["files"] = sorted(marker["files"])  # the older marker: names only
    (out / MARKER).write_text(json.dumps(marker))
    assert _summarize(results / "maps", out, "--overwrite") == 0
    assert "Acropora (checked)" not in (out / "cover.csv").read_text()


def test_another_tools_folder_is_not_replaced(results, tmp_path):
    out = tmp_path / "prepared"
    with staged_folder(out, "prepare_data.py") as staging:
        (staging / "classes.txt").write_text("x\n")
    with pytest.raises(OutputRefusedError, match="it was written by prepare_data.py"):
        check_replaceable(out, "reef_stats.py", overwrite=True)
    assert _summarize(results / "maps", out, "--overwrite") == 2
    assert (out / "classes.txt").read_text() == "x\n"


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_killed_runs_leftovers_are_removed_and_a_swapped_out_output_put_back(results, tmp_path):
    out = tmp_path / "stats"
    host, dead = socket.gethostname(), _dead_pid()
    partial = tmp_path / f".stats.partial-{host}-{dead}-x1"
    (partial / "figures").mkdir(parents=True)
    (partial / "cover.csv").write_text("half")
    alive = tmp_path / f".stats.partial-{host}-{os.getpid()}-x2"  # a run still going
    alive.mkdir()
    assert _summarize(results / "maps", out) == 0
    assert not partial.exists(), "a dead run's staging folder is removed"
    assert alive.is_dir(), "a live run's is left alone"
    alive.rmdir()

    # killed between its two renames: the previous output sits under the 'old' name
    retired = tmp_path / f".stats.old-{host}-{_dead_pid()}-x3"
    out.rename(retired)
    previous = _tree(retired)
    assert _summarize(results / "maps", out) == 2, "the put-back output is not clobbered"
    assert _tree(out) == previous and not retired.exists()


def test_inference_overwrite_keeps_outputs_no_run_marked(tmp_path):
    out = tmp_path / "my_results"
    (out / "masks").mkdir(parents=True)
    (out / "masks" / "hand_traced.png").write_bytes(b"hours of tracing")
    with pytest.raises(OutputConflictError, match=f"no {RUN_FILE}") as refused:
        OutputFolder(out, {"run": 1}, overwrite=True)
    assert "masks" in str(refused.value)
    assert (out / "masks" / "hand_traced.png").read_bytes() == b"hours of tracing"
    assert sorted(p.name for p in out.iterdir()) == ["masks"], "no lock file left behind"


def test_inference_overwrite_removes_the_runs_files_and_keeps_the_users(tmp_path):
    """A user works in a results folder: a QGIS style beside the colonies, notes beside the
    overlays, a traced mask in an image's mask folder, a copy of it elsewhere. --overwrite
    (other settings) removes each file a run writes, and none of those."""
    out = tmp_path / "results"
    with OutputFolder(out, {"run": 1}):
        pass
    runs = ["visualizations/IMG_1.jpg", "masks/IMG_1/instance_001.png",
            "masks/IMG_1/instance_002.png", "masks/IMG_2/instance_001.png", "semantic/IMG_1.png",
            ".per_image/IMG_1.json", "mosaics/ortho.classes.tif", "mosaics/ortho.confidence.tif",
            "mosaics/ortho.geojson", "mosaics/ortho.gpkg", "taglab_images/IMG_3.png",
            "predictions.json", "inference_log.txt", "taglab_project.json",
            "visualizations/.IMG_2.jpg.tmp-123", ".process_logs/process_0001.txt"]  # fmt: skip
    users = {"visualizations/notes.txt": b"IMG_1 is blurred", "masks/IMG_1/traced.png": b"t",
             "masks/checked/IMG_1.png": b"checked", "mosaics/ortho.qml": b"<qgis/>",
             "report_2026.docx": b"draft"}  # fmt: skip
    for name in runs:
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(b"run 1")
    for name, data in users.items():
        (out / name).parent.mkdir(parents=True, exist_ok=True)
        (out / name).write_bytes(data)
    with OutputFolder(out, {"run": 2}, overwrite=True) as folder:
        kept = sorted(map(str, folder.kept))
    assert [name for name in runs if (out / name).exists()] == []
    assert {name: (out / name).read_bytes() for name in users} == users
    assert not (out / "semantic").exists() and not (out / "masks" / "IMG_2").exists()
    assert kept == ["masks/IMG_1/traced.png", "masks/checked/IMG_1.png", "mosaics/ortho.qml",
                    "visualizations/notes.txt"]  # fmt: skip
    assert json.loads((out / RUN_FILE).read_text()) == {"run": 2}


def _finished_run(out: Path) -> list[str]:
    """A run's folder: two images done (a photo and a mosaic, each record written after
    its files, as a run writes them) and predictions.json noted as written."""
    files = ["visualizations/IMG_1.jpg", "masks/IMG_1/instance_001.png",
             ".per_image/IMG_1.json", "mosaics/ortho.classes.tif", "mosaics/ortho.gpkg",
             ".per_image/ortho.json"]  # fmt: skip
    with OutputFolder(out, {"run": 1}) as folder:
        for number, name in enumerate(files):
            (out / name).parent.mkdir(parents=True, exist_ok=True)
            (out / name).write_bytes(b"run 1")
            os.utime(out / name, ns=(0, 10**18 + number * 10**9))  # one second apart
        folder.assemble([], [])
    return [*files, "predictions.json"]


@pytest.mark.parametrize(
    "change",
    ["a mask retouched", "a layer saved in QGIS", "QGIS editing it now", "a project saved"],
)
def test_overwrite_refuses_files_changed_after_the_run_wrote_them(tmp_path, change):
    out = tmp_path / "results"
    files = _finished_run(out)
    if change == "a mask retouched":
        edited = "masks/IMG_1/instance_001.png"
        os.utime(out / edited, ns=(0, 10**18 + 9 * 10**9))
    elif change == "a layer saved in QGIS":
        edited = "mosaics/ortho.gpkg"
        os.utime(out / edited)
    elif change == "QGIS editing it now":  # edits wait in SQLite's WAL; the .gpkg is as it was
        edited = "mosaics/ortho.gpkg-wal"
        (out / edited).write_bytes(b"pending edits")
    else:
        edited = "predictions.json"
        (out / edited).write_bytes((out / edited).read_bytes() + b" ")
    contents = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(OutputConflictError, match="changed after the run wrote them") as refused:
        OutputFolder(out, {"run": 2}, overwrite=True)
    assert edited in str(refused.value)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == contents
    # untouched, the same folder is replaced: every one of the run's files goes
    for path in out.rglob("*"):
        if path.is_file() and path.parent != out:  # as old as their records
            os.utime(path, ns=(0, 10**18))
    (out / "mosaics/ortho.gpkg-wal").unlink(missing_ok=True)
    if change == "a project saved":
        (out / "predictions.json").unlink()
    OutputFolder(out, {"run": 2}, overwrite=True).close()
    assert [name for name in files if (out / name).exists()] == []


def test_an_edited_end_file_is_kept_and_the_runs_written_beside_it(tmp_path, caplog):
    out = tmp_path / "results"
    _finished_run(out)
    (out / "predictions.json").write_text('{"corrected": true}')
    with OutputFolder(out, {"run": 1}) as folder, caplog.at_level("WARNING", logger="inference"):
        written = folder.assemble([], [])
    assert written.name == "predictions.new.json" and "changed after the run" in caplog.text
    assert (out / "predictions.json").read_text() == '{"corrected": true}'
    assert json.loads(written.read_text())["images"] == []


def test_overwrite_refuses_a_file_where_a_run_keeps_a_folder(tmp_path):
    out = tmp_path / "results"
    _finished_run(out)
    (out / "semantic").write_text("my notes on the semantic maps")
    (out / "taglab_project.json").mkdir()
    with pytest.raises(OutputConflictError) as refused:
        OutputFolder(out, {"run": 2}, overwrite=True)
    assert "semantic (a file" in str(refused.value)
    assert "taglab_project.json (a folder" in str(refused.value)
    assert (out / "semantic").read_text() == "my notes on the semantic maps"
    assert (out / RUN_FILE).is_file() and (out / "mosaics/ortho.gpkg").is_file()


def test_writing_an_image_again_keeps_the_users_file_in_its_mask_folder(tmp_path):
    """The image's new masks replace the old ones beside the user's file; a failed image
    removes its masks and still keeps it."""
    from inferencer import InferenceResult
    from models.fusion import Instance

    out = tmp_path / "results"
    mask = np.zeros((8, 8), bool)
    mask[2:5, 2:6] = True
    colony = Instance(mask, 1, 0.9, False, "sam")
    result = InferenceResult([colony, colony], mask.astype(np.uint8))
    image = np.zeros((8, 8, 3), np.uint8)
    with OutputFolder(out, {"run": 1}) as folder:
        (out / "masks" / "IMG_1").mkdir()
        for name in ("instance_001.png", "instance_002.png", "instance_003.png"):
            (out / "masks" / "IMG_1" / name).write_bytes(b"old")
        (out / "masks" / "IMG_1" / "traced.png").write_bytes(b"hours of tracing")
        folder._write_outputs("IMG_1", image, result, ["background", "coral"], [(0, 0, 0)] * 2,
                              save_semantic=False)  # fmt: skip
        written = sorted(p.name for p in (out / "masks" / "IMG_1").iterdir())
        assert written == ["instance_001.png", "instance_002.png", "traced.png"]
        assert cv2.imread(str(out / "masks" / "IMG_1" / "instance_002.png"), 0).sum() == 12 * 255
        folder._remove_outputs("IMG_1")
    assert [p.name for p in (out / "masks" / "IMG_1").iterdir()] == ["traced.png"]
    assert (out / "masks" / "IMG_1" / "traced.png").read_bytes() == b"hours of tracing"


def test_inference_refuses_an_input_inside_what_it_would_clear(tmp_path):
    out = tmp_path / "results"
    with OutputFolder(out, {"run": 1}):
        pass
    photos = out / "visualizations" / "to_redo"
    photos.mkdir(parents=True)
    (photos / "a.jpg").write_bytes(b"jpeg")
    with pytest.raises(OutputConflictError, match="lies in"):
        OutputFolder(out, {"run": 2}, overwrite=True, inputs=[photos])
    assert (photos / "a.jpg").read_bytes() == b"jpeg"
    # the input folder itself as --output-dir is fine: a run never removes an image
    OutputFolder(photos, {"run": 3}, overwrite=True, inputs=[photos]).close()
    assert (photos / "a.jpg").read_bytes() == b"jpeg"


def test_prepare_data_refuses_folders_it_did_not_write(fiftyone, tmp_path):
    from dataset.prepare import PrepareError, prepare
    from settings import Settings

    fo = fiftyone
    photo = np.full((32, 32, 3), 90, np.uint8)
    write_png(tmp_path / "photos" / "q1.png", photo)
    name = "output_safety_fo"
    dataset = fo.Dataset(name)
    try:
        square = fo.Polyline(
            label="Acropora", points=[[(0.2, 0.2), (0.6, 0.2), (0.6, 0.6)]], closed=True
        )
        dataset.add_sample(
            fo.Sample(
                filepath=str(tmp_path / "photos" / "q1.png"),
                tags=["train"],
                polylines=fo.Polylines(polylines=[square]),
            )
        )
        data_root = tmp_path / "prepared"
        settings = Settings(data_root=data_root, image_size=32, num_workers=1)
        target = prepare(name, settings)
        assert made_by(target) == "prepare_data.py"
        assert prepare(name, settings, overwrite=True) == target
        (target / "my_split.txt").write_text("keep")
        with pytest.raises(PrepareError, match=r"did not write \(my_split.txt\)"):
            prepare(name, settings, overwrite=True)
        (target / "my_split.txt").unlink()
        (target / MARKER).unlink()  # as written before outputs were marked
        before = _tree(target)
        with pytest.raises(PrepareError, match="Move or remove it yourself"):
            prepare(name, settings, overwrite=True)
        assert _tree(target) == before
        # images kept inside the folder to be replaced: replacing it would delete them
        inside = target / "images" / "train" / "q1.png"
        sample = dataset.first()
        sample.filepath = str(inside)
        sample.save()
        write_marker(target, "prepare_data.py")
        with pytest.raises(PrepareError, match="lies inside"):
            prepare(name, settings, overwrite=True)
        assert inside.is_file()
    finally:
        dataset.delete()


def test_the_current_folder_as_output_is_written_beside_not_inside(results, tmp_path, monkeypatch):
    """'--output-dir .' has no name: the staging folder used to land inside the target,
    and the finished run was refused at the end, its work lost."""
    out = tmp_path / "stats_here"
    out.mkdir()
    monkeypatch.chdir(out)
    assert _summarize(results / "maps", Path(".")) == 0
    assert (out / "report.html").is_file() and made_by(out) == "reef_stats.py"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_a_link_as_output_is_refused(results, tmp_path, capsys):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert _summarize(results / "maps", tmp_path / "link") == 2
    assert "is a link" in capsys.readouterr().err
