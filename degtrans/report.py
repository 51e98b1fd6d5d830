"""A self-contained HTML report: one file, pictures inlined as base64 PNG, numbers as tables.

The demo builds ``Section`` objects as its stages finish and writes them with ``write_report``; a
stage that did not run is a section with ``skipped`` set, shown as such (never as numbers).
"""

from __future__ import annotations

import base64
import datetime
import html
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from degtrans.atomic import write_atomic

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; padding: 0 1em; color: #222; }
h1 { border-bottom: 2px solid #444; }
section { margin: 2em 0; }
figure { margin: 1em 0; }
figure img { max-width: 100%; border: 1px solid #ccc; }
figcaption { font-size: 0.9em; color: #555; }
table { border-collapse: collapse; margin: 0.5em 0; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eee; }
td:first-child, th:first-child { text-align: left; }
.skipped { color: #a40; font-style: italic; }
.numbers td { font-variant-numeric: tabular-nums; }
.meta { color: #666; font-size: 0.85em; }
"""


@dataclass(frozen=True)
class Figure:
    """A PNG file shown inline, with a caption."""

    png: Path
    caption: str = ""


@dataclass(frozen=True)
class Table:
    """A small table of results (cells are formatted with ``format_cell``)."""

    columns: Sequence[str]
    rows: Sequence[Sequence[object]]
    caption: str = ""


@dataclass
class Section:
    """One stage of the report: text, named numbers, tables and figures, or why it was skipped."""

    title: str
    text: str = ""
    numbers: dict[str, object] = field(default_factory=dict)
    tables: list[Table] = field(default_factory=list)
    figures: list[Figure] = field(default_factory=list)
    skipped: str | None = None
    anchor: str = ""


def format_cell(value: object) -> str:
    """Numbers with sensible precision; everything else as text."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        if value != value:  # NaN
            return "—"
        return f"{value:.4g}" if abs(value) < 1e-2 or abs(value) >= 1e4 else f"{value:.3f}"
    return str(value)


def inline_png(path: Path) -> str:
    """A ``data:`` URI of a PNG file (checked to be one, so a broken picture fails here, not in a browser)."""
    data = Path(path).read_bytes()
    if not data.startswith(PNG_SIGNATURE):
        raise ValueError(f"{path}: not a PNG file")
    return "data:image/png;base64," + base64.b64encode(data).decode("ascii")


def _table(table: Table, css: str = "") -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in table.columns)
    cells = ("".join(f"<td>{html.escape(format_cell(v))}</td>" for v in row) for row in table.rows)
    body = "".join(f"<tr>{row}</tr>" for row in cells)
    caption = f"<caption>{html.escape(table.caption)}</caption>" if table.caption else ""
    return f'<table class="{css}">{caption}<thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _section(section: Section, index: int) -> str:
    anchor = section.anchor or f"s{index}"
    parts = [f'<section id="{html.escape(anchor)}"><h2>{html.escape(section.title)}</h2>']
    if section.skipped is not None:
        parts.append(f'<p class="skipped">Skipped: {html.escape(section.skipped)}</p>')
    if section.text:
        parts.extend(f"<p>{html.escape(p)}</p>" for p in section.text.split("\n\n"))
    if section.numbers:
        parts.append(_table(Table(["quantity", "value"], list(section.numbers.items())), "numbers"))
    parts.extend(_table(table) for table in section.tables)
    for number, figure in enumerate(section.figures):
        alt = html.escape(figure.caption or Path(figure.png).name)
        parts.append(
            f'<figure><img id="{html.escape(anchor)}-fig{number}" alt="{alt}" src="{inline_png(figure.png)}">'
            f"<figcaption>{html.escape(figure.caption)}</figcaption></figure>"
        )
    parts.append("</section>")
    return "\n".join(parts)


def write_report(
    path: str | os.PathLike, title: str, sections: Sequence[Section], meta: dict[str, object] | None = None
) -> Path:
    """Write the whole page atomically to ``path`` as one HTML file (no external resources); returns it."""
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC")
    meta_line = " · ".join(f"{k}: {format_cell(v)}" for k, v in (meta or {}).items())
    toc = "".join(
        f'<li><a href="#{html.escape(s.anchor or f"s{i}")}">{html.escape(s.title)}</a>'
        f"{' (skipped)' if s.skipped is not None else ''}</li>"
        for i, s in enumerate(sections)
    )
    body = "\n".join(_section(s, i) for i, s in enumerate(sections))
    return write_atomic(
        path,
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
        f'<p class="meta">{html.escape(stamp)}{" · " + html.escape(meta_line) if meta_line else ""}</p>'
        f"<ol>{toc}</ol>\n{body}\n</body></html>\n",
    )
