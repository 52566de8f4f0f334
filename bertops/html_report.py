"""Self-contained HTML pages for the Kubeflow UI's HTML artifacts and a local run's reports.

The UI shows an HTML artifact in a sandboxed frame with no network, so a page carries its style
and its figures inline (PNG as a data URI). Every text that comes from data or settings goes
through ``html.escape``: a text in the dataset is shown, never interpreted.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Iterable, Sequence

STYLE = (
    "body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:75em}"
    "h1{font-size:1.4em}h2{font-size:1.15em;margin-top:1.6em}"
    "table{border-collapse:collapse;margin:.5em 0}"
    "th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left;vertical-align:top}"
    "th{background:#f3f3f3}td.num{text-align:right;font-variant-numeric:tabular-nums}"
    "td.text{max-width:50em;white-space:pre-wrap;word-break:break-word}"
    "img{max-width:100%;height:auto}.note{color:#555}"
)


def text(value: object) -> str:
    """``value`` as HTML text: markup in it is shown as characters, never run."""
    return html.escape(str(value), quote=True)


def cell(value: object, digits: int = 4) -> str:
    """One table cell: numbers right-aligned (floats to ``digits`` places), anything else escaped text."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return f"<td>{text(value)}</td>"
    shown = f"{value:.{digits}f}" if isinstance(value, float) else str(value)
    return f'<td class="num">{shown}</td>'


def table(headers: Sequence[str], rows: Iterable[Sequence[object]], text_column: int | None = None) -> str:
    """An HTML table; column ``text_column`` (if any) holds long texts that wrap."""
    head = "".join(f"<th>{text(h)}</th>" for h in headers)
    body = []
    for row in rows:
        cells = [
            f'<td class="text">{text(value)}</td>' if i == text_column else cell(value) for i, value in enumerate(row)
        ]
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def png_image(png: bytes, alt: str) -> str:
    """An ``<img>`` with the PNG inline, so the page needs nothing beside it."""
    return f'<img alt="{text(alt)}" src="data:image/png;base64,{base64.b64encode(png).decode()}">'


def page(title: str, sections: Iterable[str]) -> str:
    """A complete page: ``title`` (escaped) as its title and heading, then the ``sections`` (HTML)."""
    return (
        f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>{text(title)}</title>'
        f"<style>{STYLE}</style></head><body><h1>{text(title)}</h1>{''.join(sections)}</body></html>\n"
    )
