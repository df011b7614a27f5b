"""report.html: one self-contained page (tables, and figures embedded as data URIs).

It opens from disk in any browser, with no server and no network: no script, no
stylesheet or font from elsewhere, every image inside the file. Nothing runs past the
window's right edge, however narrow: a table wider than the page (the per-image tables
have two columns per genus with --truth) scrolls sideways in its own box, its first
column (the image) staying in view, and figures shrink to the page's width.
"""

from __future__ import annotations

import base64
import html
import time
from dataclasses import dataclass, field
from pathlib import Path

import jinja2
import pandas as pd

from dataset.image_io import write_bytes_atomic

TEMPLATE = jinja2.Template(
    """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222;
       padding: 0 1em; background: #fff; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
.table { overflow-x: auto; max-width: 100%; margin: 0.5em 0; }
table { border-collapse: collapse; font-size: 0.85em; }
th, td { border: 1px solid #ddd; padding: 0.2em 0.5em; text-align: right; }
th { background: #f3f3f3; }
td:first-child, th:first-child { text-align: left; position: sticky; left: 0; }
td { white-space: nowrap; } td:first-child { background: #fff; }
.note { color: #555; font-size: 0.9em; }
.failed { color: #a00; }
dd, li { overflow-wrap: anywhere; }
figure { display: inline-block; margin: 0.5em 1em 0.5em 0; vertical-align: top;
         max-width: calc(100% - 1em); }
figure img { max-width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; }
dl { display: grid; grid-template-columns: max-content minmax(0, auto); gap: 0.2em 1em; }
dt { font-weight: 600; } dd { margin: 0; }
</style>
</head>
<body>
<h1>{{ title }}</h1>
<p class="note">Written {{ written }} by reef_stats.py.</p>
<dl>
{% for key, value in settings %}<dt>{{ key }}</dt><dd>{{ value }}</dd>
{% endfor %}</dl>
{% if failures %}<h2 class="failed">Images not counted ({{ failures|length }})</h2>
<ul class="failed">
{% for name, reason in failures %}<li>{{ name }}: {{ reason }}</li>
{% endfor %}</ul>
{% endif %}
{% if figures %}<h2>Figures</h2>
{% for caption, data in figures %}<figure>
<img alt="{{ caption }}" src="data:image/png;base64,{{ data }}">
<figcaption>{{ caption }}</figcaption></figure>
{% endfor %}{% endif %}
{% for section in sections %}<h2>{{ section.title }}</h2>
{% if section.note %}<p class="note">{{ section.note }}</p>{% endif %}
<div class="table">{{ section.html|safe }}</div>
{% endfor %}
</body>
</html>
""",
    autoescape=True,
)


@dataclass
class Section:
    title: str
    table: pd.DataFrame
    note: str = ""
    index: bool = False

    @property
    def html(self) -> str:
        table = self.table.copy()
        for column in table.columns:  # nullable columns: pandas would print <NA>
            if isinstance(table[column].dtype, (pd.Int64Dtype, pd.Float64Dtype)):
                table[column] = table[column].astype(object).where(table[column].notna(), "")
        text = table.to_html(
            index=self.index, border=0, na_rep="", float_format=lambda v: f"{v:.2f}"
        )
        return text  # pandas escapes the cells; the template marks it safe


@dataclass
class Report:
    title: str
    settings: list[tuple[str, str]] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)
    sections: list[Section] = field(default_factory=list)
    failures: list[tuple[str, str]] = field(default_factory=list)

    def render(self) -> str:
        figures = [
            (caption, base64.b64encode(path.read_bytes()).decode("ascii"))
            for caption, path in self.figures
        ]
        return TEMPLATE.render(
            title=self.title,
            written=html.escape(time.strftime("%Y-%m-%d %H:%M")),
            settings=self.settings,
            figures=figures,
            sections=self.sections,
            failures=self.failures,
        )

    def write(self, path: Path) -> Path:
        write_bytes_atomic(path, self.render().encode("utf-8"))
        return path
