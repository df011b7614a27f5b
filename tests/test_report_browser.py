"""report.html as a reader sees it (issue 23 item 8): laid out by a real browser, headless
Chromium where it is installed (Debian: apt-get install chromium), skipped with the reason
where it is not; and what the page says, checked without a browser."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from PIL import Image
from test_analysis_synthetic import FINE, Instance, disc, write_prepared, write_two_stage

import reef_stats
from analysis import figures
from analysis.sources import ClassInfo, colonies_of_class_map

SHAPE = (128, 128)
DEMO_GENERA = ("Acropora", "Porites", "Pocillopora", "Montipora", "Fungia")  # reef_demo's
WINDOW = (800, 900)  # Chromium's own default width; a laptop's half screen
PAGE_HEIGHT = 6000  # the whole report in one screenshot
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def demo_like_report(base: Path, *extra: str) -> Path:
    """reef_stats.py summarize as the demo runs it (two-stage output with semantic maps,
    --truth, a quadrat scale), on six quadrats with every genus of the demo: the per-image
    tables then have 13 columns, as the demo's do. Returns report.html."""
    indices = [FINE.classes.index(name) for name in DEMO_GENERA]
    maps, semantic, instances = {}, {}, {}
    for k in range(6):
        stem = f"MOO_2024050{k + 1}_T1_Q{k + 1:02d}"
        truth = np.zeros(SHAPE, np.uint8)
        for g, index in enumerate(indices):
            truth[disc(SHAPE, (20 + 22 * g, 25 + 15 * (g % 3)), 6 + k % 3 + g)] = index
        pred = truth.copy()
        pred[disc(SHAPE, (100, 100), 5 + k)] = indices[k % len(indices)]  # some errors
        maps[stem], semantic[stem] = truth, pred
        colonies = colonies_of_class_map(pred, ClassInfo.from_names(FINE.classes))
        instances[stem] = [Instance(c.full(SHAPE), c.class_index, 0.5) for c in colonies]
    prepared = write_prepared(base / "prepared", maps)
    output = write_two_stage(base / "inference", instances, semantic, SHAPE)
    stats = base / "stats"
    args = [output, "--truth", prepared, "--quadrat-size-cm", 50, "--output-dir", stats, *extra]
    assert reef_stats.main(["summarize", *map(str, args)]) == 0
    return stats / "report.html"


@pytest.fixture(scope="module")
def report(tmp_path_factory) -> Path:
    return demo_like_report(tmp_path_factory.mktemp("report"))


def chromium(
    page: Path, profile: Path, *args: str, height: int = WINDOW[1]
) -> subprocess.CompletedProcess:
    if CHROMIUM is None:
        pytest.skip(
            "headless Chromium is not installed (Debian: apt-get install chromium); the "
            "report's layout in a browser is not checked"
        )
    command = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
               f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{height}",
               *args, page.as_uri()]  # fmt: skip
    run = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr[-2000:]
    return run


# The page itself runs no script (it must open anywhere, offline): the test reads the
# layout through a copy with this one added, once every figure has loaded.
LAYOUT_PROBE = """<script>
window.addEventListener("load", () => {
  const tables = [...document.querySelectorAll("table")];
  document.body.dataset.layout = JSON.stringify({
    page: document.documentElement.scrollWidth,
    window: window.innerWidth,
    widest_table: Math.max(...tables.map(t => t.scrollWidth)),
    figures: [...document.images].map(i => i.naturalWidth),
  });
});
</script>"""


def test_nothing_runs_past_the_right_edge_of_the_page(report, tmp_path):
    """The demo's per-image tables were wider than the page and ran past its right edge:
    the page scrolled sideways. They scroll in their own box now, figures shrink to fit."""
    probe = tmp_path / "probe.html"
    probe.write_text(report.read_text().replace("</body>", LAYOUT_PROBE + "</body>"))
    dom = chromium(probe, tmp_path / "profile", "--dump-dom").stdout
    found = re.search(r'data-layout="([^"]*)"', dom)
    assert found, "the page's load event never came"
    layout = json.loads(found.group(1).replace("&quot;", '"'))
    assert layout["window"] == WINDOW[0]
    # the check means something only where tables and figures are wider than the window
    assert layout["widest_table"] > WINDOW[0] and all(w > 0 for w in layout["figures"])
    assert layout["page"] <= layout["window"], layout


def test_the_screenshot_has_page_background_at_its_right_edge(report, tmp_path):
    """What the issue saw in a headless screenshot: table cells cut off at the right edge.
    The right-most pixels of the window are the page's white margin now."""
    shot = tmp_path / "report.png"
    chromium(report, tmp_path / "profile", f"--screenshot={shot}", height=PAGE_HEIGHT)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    assert pixels.shape[:2] == (PAGE_HEIGHT, WINDOW[0])
    assert (pixels[-50:] == 255).all(), "the window must show the whole page, down to its end"
    edge = pixels[:, -6:]
    bleeding = np.flatnonzero((edge != 255).any(axis=(1, 2)))
    assert bleeding.size == 0, f"not page background at the right edge in rows {bleeding[:10]}"


def test_size_frequency_panels_count_whole_colonies(tmp_path, monkeypatch):
    """One colony per class gave y ticks of 0.2, 0.4, ... colonies."""
    shown = []
    monkeypatch.setattr(figures, "_save", lambda fig, path: shown.append(fig) or path)
    sizes = [{"source": s, "genus": g, "size_class": k, "unit": "cm2", "colonies": int(k == 3)}
             for s in ("predicted", "annotated") for g in ("Acropora", "Porites")
             for k in (2, 3, 4)]  # fmt: skip
    figures.size_frequency(pd.DataFrame(sizes), ClassInfo.from_names(FINE.classes), tmp_path / "f")
    panels = [ax for ax in shown[0].axes if ax.has_data()]
    assert len(panels) == 2
    for ax in panels:
        ticks = [t for t in ax.get_yticks() if ax.get_ylim()[0] <= t <= ax.get_ylim()[1]]
        assert len(ticks) >= 2 and all(float(t).is_integer() for t in ticks), ticks


def test_the_settings_say_none_when_no_groups_were_given(report, tmp_path):
    """Without --groups or --group-pattern the one group's placeholder column ('group')
    was shown as if it were a grouping."""
    assert "<dt>Groups</dt><dd>none</dd>" in report.read_text()
    grouped = demo_like_report(tmp_path, "--group-pattern", r"(?P<site>[A-Z]+)_(?P<date>\d+)")
    assert "<dt>Groups</dt><dd>site, date</dd>" in grouped.read_text()
