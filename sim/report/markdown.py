"""The Markdown report: the same document as the HTML page, figures as PNG files beside it.

See :mod:`sim.report.html` for the document's blocks. Figures go to ``img/NAME.png`` and are
linked relatively, so the folder can be committed or published as it is (GitHub renders it).
"""

from __future__ import annotations

import re
from typing import Any

IMG_DIR = "img"
_SPECIAL = re.compile(r"([\\*_\[\]<>|#~])")


def _inline(text: Any) -> str:
    """Plain text with Markdown's special characters escaped; `code` spans kept as they are."""
    out = []
    for part in re.split(r"(`[^`]+`)", str(text)):
        if len(part) >= 2 and part.startswith("`") and part.endswith("`"):
            out.append(part)
        else:
            out.append(_SPECIAL.sub(r"\\\1", part))
    return "".join(out).replace("\n", " ")


def _cell(text: Any) -> str:
    return _inline(text)


def _block(b: Any, files: dict[str, bytes], level: int = 0) -> list[str]:
    kind = b[0]
    if kind == "h2":
        return [f"## {_inline(b[1])}", ""]
    if kind == "h3":
        return [f"### {_inline(b[1])}", ""]
    if kind == "p":
        return [_inline(b[1]), ""]
    if kind == "note":
        return [f"> **Note:** {_inline(b[1])}", ""]
    if kind == "list":
        return [f"- {_inline(i)}" for i in b[1]] + [""]
    if kind == "answer":
        return [f"## {_inline(b[1])}", ""] + [f"- {_inline(i)}" for i in b[2]] + [""]
    if kind == "code":
        fence = "````" if "```" in b[1] else "```"
        return [fence, b[1].rstrip("\n"), fence, ""]
    if kind == "figure":
        plot = b[1]
        name = f"{plot.name}.png"
        files[f"{IMG_DIR}/{name}"] = plot.png
        return [f"![{_inline(plot.alt)}]({IMG_DIR}/{name})", "", f"*{_inline(plot.title)}.* {_inline(plot.caption)}", ""]
    if kind == "table":
        headers, rows = b[1], b[2]
        out = ["| " + " | ".join(_cell(h) for h in headers) + " |",
               "|" + "|".join([":---"] + ["---:"] * (len(headers) - 1)) + "|"]
        out += ["| " + " | ".join(_cell(c) for c in r) + " |" for r in rows]
        return out + [""]
    if kind == "details":
        out = [f"**{_inline(b[1])}**", ""]
        for x in b[2]:
            out += _block(x, files, level + 1)
        return out
    raise ValueError(f"unknown block kind {kind!r}")


def render(doc: dict[str, Any]) -> tuple[str, dict[str, bytes]]:
    """The Markdown text and the image files it links: {relative path: PNG bytes}."""
    files: dict[str, bytes] = {}
    lines = [f"# {_inline(doc['title'])}", ""]
    if doc.get("subtitle"):
        lines += [f"*{_inline(doc['subtitle'])}*", ""]
    for b in doc["blocks"]:
        lines += _block(b, files)
    if doc.get("footer"):
        lines += ["---", "", _inline(doc["footer"]), ""]
    return "\n".join(lines).rstrip("\n") + "\n", files
