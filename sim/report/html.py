"""The self-contained HTML report: one file, inline CSS, PNG figures as data: URIs, no script.

A report is a document ``{"title", "subtitle", "blocks"}`` built by :mod:`sim.report.command`;
each block is a tuple whose first item names its kind:

``("h2", text)``, ``("h3", text)``, ``("p", text)``, ``("note", text)``, ``("list", [text, ...])``,
``("figure", Plot)``, ``("table", headers, rows)``, ``("code", text)``,
``("details", summary, [blocks])``, ``("answer", heading, [sentence, ...])`` (the report's
headline answer, first on the page).

Text is plain; a span in backticks is shown as code. Nothing in the page refers to anything
outside it, so it can be mailed, archived or opened offline.
"""

from __future__ import annotations

import base64
import html
import json
import re
from typing import Any

CSS = """
:root { color-scheme: light; }
body { font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1d1d1f; margin: 0; background: #fafafa; }
main { max-width: 980px; margin: 0 auto; padding: 28px 28px 60px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 4px; }
.subtitle { color: #555; margin: 0 0 22px; }
h2 { font-size: 20px; margin: 34px 0 10px; padding-bottom: 4px; border-bottom: 1px solid #e3e3e3; }
h3 { font-size: 16px; margin: 22px 0 8px; }
code, pre { font: 13px/1.45 ui-monospace, "DejaVu Sans Mono", Menlo, Consolas, monospace; }
code { background: #f2f2f4; padding: 1px 4px; border-radius: 3px; }
pre { background: #f6f6f8; padding: 10px 12px; border-radius: 4px; overflow-x: auto; }
pre code { background: none; padding: 0; }
figure { margin: 18px 0 26px; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #444; font-size: 13.5px; margin-top: 6px; }
figcaption b { color: #1d1d1f; }
table { border-collapse: collapse; margin: 10px 0 18px; font-size: 13.5px; }
th, td { border-bottom: 1px solid #e6e6e6; padding: 4px 10px; text-align: right; vertical-align: top; }
th { background: #f4f4f6; font-weight: 600; }
td:first-child, th:first-child { text-align: left; }
.wide { overflow-x: auto; }
.note { background: #fff8e6; border-left: 4px solid #f0b429; padding: 8px 12px; margin: 12px 0; }
details { margin: 10px 0; }
summary { cursor: pointer; font-weight: 600; }
.answer { background: #eef6ee; border-left: 4px solid #3a9d3a; padding: 2px 16px 6px; margin: 0 0 18px; }
.answer h2 { border: none; margin-top: 12px; }
footer { color: #777; font-size: 12.5px; margin-top: 40px; }
"""


def _inline(text: str) -> str:
    parts = re.split(r"(`[^`]+`)", str(text))
    out = []
    for p in parts:
        if len(p) >= 2 and p.startswith("`") and p.endswith("`"):
            out.append(f"<code>{html.escape(p[1:-1])}</code>")
        else:
            out.append(html.escape(p))
    return "".join(out)


def _block(b: Any) -> str:
    kind = b[0]
    if kind in ("h2", "h3"):
        anchor = re.sub(r"[^a-z0-9]+", "-", str(b[1]).lower()).strip("-")
        return f'<{kind} id="{anchor}">{_inline(b[1])}</{kind}>'
    if kind == "p":
        return f"<p>{_inline(b[1])}</p>"
    if kind == "note":
        return f'<div class="note">{_inline(b[1])}</div>'
    if kind == "answer":
        items = "".join(f"<li>{_inline(i)}</li>" for i in b[2])
        return f'<section id="answer" class="answer"><h2>{_inline(b[1])}</h2><ul>{items}</ul></section>'
    if kind == "list":
        return "<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in b[1]) + "</ul>"
    if kind == "code":
        return f"<pre><code>{html.escape(b[1])}</code></pre>"
    if kind == "figure":
        plot = b[1]
        data = base64.b64encode(plot.png).decode("ascii")
        curves = (f' data-curves="{html.escape(json.dumps(plot.curves, separators=(",", ":")))}"'
                  if plot.curves else "")
        return (f'<figure id="fig-{html.escape(plot.name)}"{curves}><img src="data:image/png;base64,{data}" '
                f'alt="{html.escape(plot.alt)}" width="880">'
                f"<figcaption><b>{_inline(plot.title)}.</b> {_inline(plot.caption)}</figcaption></figure>")
    if kind == "table":
        headers, rows = b[1], b[2]
        head = "".join(f"<th>{_inline(h)}</th>" for h in headers)
        body = "".join("<tr>" + "".join(f"<td>{_inline(c)}</td>" for c in r) + "</tr>" for r in rows)
        return f'<div class="wide"><table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table></div>'
    if kind == "details":
        inner = "\n".join(_block(x) for x in b[2])
        return f"<details><summary>{_inline(b[1])}</summary>\n{inner}\n</details>"
    raise ValueError(f"unknown block kind {kind!r}")


def render(doc: dict[str, Any]) -> str:
    body = "\n".join(_block(b) for b in doc["blocks"])
    foot = _inline(doc.get("footer", ""))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" content=\"default-src 'none'; img-src data:; "
        "style-src 'unsafe-inline'\">\n"
        f"<title>{html.escape(doc['title'])}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{_inline(doc['title'])}</h1>\n<p class=\"subtitle\">{_inline(doc.get('subtitle', ''))}</p>\n"
        f"{body}\n<footer>{foot}</footer>\n</main>\n</body>\n</html>\n"
    )
