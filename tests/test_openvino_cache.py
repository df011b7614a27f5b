"""The OpenVINO encoder cache (models/sam_openvino.py): a size cap with least recently used
entries removed first, a command that clears it, and random SAM weights kept out of it.
Fake entries here (no OpenVINO needed); the real encoder's cases are in tests/test_sam_cpu.py
(tests/openvino_checks.py)."""

from __future__ import annotations

import fcntl
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from models.sam_openvino import (
    DEFAULT_CACHE_LIMIT_MB,
    ENTRY_PREFIX,
    cache_entries,
    cache_limit_bytes,
    evict,
)

ROOT = Path(__file__).resolve().parents[1]


def fake_entry(cache: Path, name: str, age_s: float, size: int = 1000) -> str:
    """An encoder's .xml and .bin (size bytes in all), last used age_s seconds ago."""
    cache.mkdir(parents=True, exist_ok=True)
    stem = f"{ENTRY_PREFIX}{name}"
    used = time.time() - age_s
    for suffix, part in ((".xml", size // 10), (".bin", size - size // 10)):
        path = cache / f"{stem}{suffix}"
        path.write_bytes(b"\0" * part)
        os.utime(path, (used, used))
    (cache / f"{stem}.lock").touch()
    return stem


def stems(cache: Path) -> list[str]:
    return [entry.stem for entry in cache_entries(cache)]


def test_entries_are_listed_least_recently_used_first_with_their_size(tmp_path):
    a = fake_entry(tmp_path, "a", 10, 500)
    b = fake_entry(tmp_path, "b", 30, 700)
    c = fake_entry(tmp_path, "c", 20, 900)
    (tmp_path / "notes.txt").write_text("not an entry")
    entries = cache_entries(tmp_path)
    assert [e.stem for e in entries] == [b, c, a]
    assert [e.size for e in entries] == [700, 900, 500]
    assert cache_entries(tmp_path / "missing") == []


def test_eviction_removes_the_least_recently_used_until_under_the_cap(tmp_path):
    names = [fake_entry(tmp_path, name, age) for name, age in (("a", 40), ("b", 30), ("c", 20),
                                                                 ("d", 10))]  # fmt: skip
    os.utime(tmp_path / f"{names[0]}.xml")  # "a" used just now: "b" is now the oldest
    assert evict(tmp_path, limit=2500) == [names[1], names[2]]
    assert stems(tmp_path) == [names[3], names[0]]
    assert not (tmp_path / f"{names[1]}.lock").exists() and not list(tmp_path.glob("*b.*"))
    assert evict(tmp_path, limit=2000) == [], "at the cap: nothing goes"


def test_eviction_keeps_the_entry_in_use_and_entries_another_process_holds(tmp_path):
    old = fake_entry(tmp_path, "old", 30)
    held = fake_entry(tmp_path, "held", 20)
    used = fake_entry(tmp_path, "used", 40, 5000)  # the oldest, and alone over the cap
    with open(tmp_path / f"{held}.lock", "a") as lock:
        # another process exporting or reading it (flock: per open file, like a process)
        fcntl.flock(lock, fcntl.LOCK_EX)
        assert evict(tmp_path, limit=0, keep=used) == [old]
    assert stems(tmp_path) == [used, held]
    assert evict(tmp_path, limit=0, keep=used) == [held]


def test_a_killed_export_is_evicted_too(tmp_path):
    """A lone .bin (killed between the two renames) and its scratch folder."""
    stem = fake_entry(tmp_path, "killed", 50)
    (tmp_path / f"{stem}.xml").unlink()
    (tmp_path / f".{stem}.abc123").mkdir()
    fake_entry(tmp_path, "whole", 10)
    assert evict(tmp_path, limit=1000) == [stem]
    assert not list(tmp_path.glob(f"*{stem}*"))


def test_the_cap_is_read_from_the_environment(monkeypatch):
    monkeypatch.delenv("CORAL_CACHE_MAX_MB", raising=False)
    assert cache_limit_bytes() == DEFAULT_CACHE_LIMIT_MB * 2**20 == 2 * 2**30
    monkeypatch.setenv("CORAL_CACHE_MAX_MB", "0.5")
    assert cache_limit_bytes() == 2**19
    for wrong in ("2GB", "-1", "nan"):
        monkeypatch.setenv("CORAL_CACHE_MAX_MB", wrong)
        with pytest.raises(ValueError, match="CORAL_CACHE_MAX_MB"):
            cache_limit_bytes()


def _command(*args: str, cache_root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "models.sam_openvino", *args], cwd=ROOT, capture_output=True,
        text=True, timeout=300, env={**os.environ, "CORAL_CACHE_DIR": str(cache_root)},
    )  # fmt: skip


def test_the_clear_cache_command_removes_every_entry_and_nothing_else(tmp_path):
    cache = tmp_path / "openvino"  # CORAL_CACHE_DIR/openvino, as default_cache_dir()
    fake_entry(cache, "a", 10, 3 * 2**20)
    killed = fake_entry(cache, "b", 20)
    (cache / f"{killed}.xml").unlink()
    (cache / f".{ENTRY_PREFIX}c.xyz").mkdir()  # a killed export's folder, no model file yet
    (cache / f"{ENTRY_PREFIX}c.lock").touch()
    (cache / "other.txt").write_text("someone else's")
    listed = _command(cache_root=tmp_path)
    assert listed.returncode == 0, listed.stderr[-2000:]
    assert "2 cached encoder(s)" in listed.stdout and "of 2048 MiB" in listed.stdout
    result = _command("--clear-cache", cache_root=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    assert f"Removed 2 cached encoder(s), 3.0 MiB, from {cache}" in result.stdout
    assert sorted(p.name for p in cache.iterdir()) == ["other.txt"]


def test_only_load_coralscop_without_a_checkpoint_marks_random_weights(tmp_path):
    from models.coralscop import SAM_TINY, build_coralscop, has_random_weights, load_coralscop

    random_sam, _ = load_coralscop(None, SAM_TINY)
    assert has_random_weights(random_sam.image_encoder)
    torch.save(build_coralscop(SAM_TINY).state_dict(), tmp_path / "tiny.pth")
    loaded, _ = load_coralscop(tmp_path / "tiny.pth", SAM_TINY)
    assert not has_random_weights(loaded.image_encoder)
    assert not has_random_weights(build_coralscop(SAM_TINY).image_encoder)
