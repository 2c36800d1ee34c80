"""A MkDocs hook: the pages' maths as MathML, made at build time.

``pymdownx.arithmatex`` (``generic: true``) keeps ``$...$`` and ``$$...$$`` out of
Markdown's hands and wraps them as ``\\(...\\)`` / ``\\[...\\]``; this turns each into
MathML with ``latex2mathml``, which browsers render themselves (MathML Core): no
JavaScript, no CDN, nothing fetched when a page is read.
"""

from __future__ import annotations

import html
import re
from typing import Any

from latex2mathml.converter import convert

_BLOCK = re.compile(r'<div class="arithmatex">\s*\\\[(.*?)\\\]\s*</div>', re.S)
_INLINE = re.compile(r'<span class="arithmatex">\\\((.*?)\\\)</span>', re.S)


def _mathml(tex: str, display: str) -> str:
    return convert(html.unescape(tex).strip(), display=display)


def on_page_content(page_html: str, **_: Any) -> str:
    page_html = _BLOCK.sub(
        lambda m: f'<div class="arithmatex">{_mathml(m.group(1), "block")}</div>', page_html
    )
    return _INLINE.sub(
        lambda m: f'<span class="arithmatex">{_mathml(m.group(1), "inline")}</span>', page_html
    )
