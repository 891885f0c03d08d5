"""HTML building blocks of report.html: one self-contained page (inline CSS, images as data URIs, no scripts),
so it renders the same offline, attached to a ticket or opened from a zip."""

from __future__ import annotations

import base64
import html

_STYLE = (
    "body{font-family:system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}"
    "h1{font-size:1.5em}h2{font-size:1.2em;margin-top:1.6em;border-bottom:1px solid #ddd;padding-bottom:.2em}"
    "table{border-collapse:collapse;margin:.6em 0 1em}"
    "td,th{border:1px solid #ccc;padding:4px 8px;text-align:left;vertical-align:top}"
    "thead th{background:#f3f3f3}tbody th{background:#fafafa;font-weight:600;white-space:nowrap}"
    "td.pass{color:#1b7f5b;font-weight:600}td.fail{color:#b3261e;font-weight:600}"
    "img{max-width:100%;display:block;margin:.5em 0}p.note{color:#555}"
)


def table(header: list[str], rows: list[list[str]]) -> str:
    """A table with a header row; cells reading pass / FAIL... are coloured."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def facts(rows: list[tuple[str, str]]) -> str:
    """A two-column table of (label, value) rows: labels as row headers, no header row."""
    body = "".join(f"<tr><th scope='row'>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>" for k, v in rows)
    return f"<table><tbody>{body}</tbody></table>"


def image(alt: str, png: bytes) -> str:
    return f"<img alt='{html.escape(alt, quote=True)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'>"


def note(text: str) -> str:
    return f"<p class='note'>{html.escape(text)}</p>"


def section(title: str, *blocks: str) -> str:
    return f"<h2>{html.escape(title)}</h2>" + "".join(blocks)


def page(title: str, *blocks: str) -> str:
    return (
        f"<!doctype html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
        f"<style>{_STYLE}</style></head><body><h1>{html.escape(title)}</h1>{''.join(blocks)}</body></html>\n"
    )


def _cell(value: str) -> str:
    verdict = "pass" if value == "pass" else "fail" if value.startswith("FAIL") else ""
    return f"<td class='{verdict}'>{html.escape(value)}</td>" if verdict else f"<td>{html.escape(value)}</td>"
