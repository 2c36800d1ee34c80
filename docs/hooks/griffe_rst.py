"""A griffe extension for the API pages: jrnn's docstrings hold some reST markup.

Google-style sections parse as they are, but the prose also holds Sphinx roles
(``:func:`jrnn.rnn```, ``:class:`~jrnn.RNNParams```), literal blocks introduced by
``::`` and reST simple tables (rows between lines of ``====``), which Markdown would
print as written (a ``====`` line even makes the line above it a heading). This turns
each role into inline code (the last dotted part for ``~``, as Sphinx shows it), each
``::`` at the end of a line into ``:`` (the indented block after it is a Markdown code
block already) and each simple table into a Markdown table. It changes the rendered
pages only; the sources stay as they are.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

_ROLE = re.compile(r":(?:func|meth|class|mod|attr|data|obj|exc|const):`(~?)([^`]+)`")
_LITERAL = re.compile(r"(?<=\S)::$", flags=re.M)
_RULE = re.compile(r"^ *=+(?: +=+)+ *$")


def _role(match: re.Match[str]) -> str:
    tilde, target = match.groups()
    return f"`{target.rsplit('.', 1)[-1] if tilde else target}`"


def _cells(line: str, starts: list[int]) -> list[str]:
    ends = [*starts[1:], None]
    return [line[a:b].strip().replace("|", "\\|") for a, b in zip(starts, ends, strict=True)]


def _tables(text: str) -> str:
    """Each reST simple table (a rule, a header row, a rule, rows, a rule) as Markdown."""
    lines, out, i = text.split("\n"), [], 0
    while i < len(lines):
        rules = [j for j in range(i, min(i + 3, len(lines))) if _RULE.match(lines[j])]
        if rules[:2] != [i, i + 2] or i + 2 >= len(lines):
            out.append(lines[i])
            i += 1
            continue
        end = next((j for j in range(i + 3, len(lines)) if _RULE.match(lines[j])), None)
        if end is None:
            out.append(lines[i])
            i += 1
            continue
        indent = len(lines[i]) - len(lines[i].lstrip())
        starts = [m.start() for m in re.finditer(r"=+", lines[i])]
        rows = [_cells(lines[i + 1], starts)]
        rows += [_cells(row, starts) for row in lines[i + 3 : end] if row.strip()]
        pad = " " * indent
        out.append(pad + "| " + " | ".join(rows[0]) + " |")
        out.append(pad + "|" + " --- |" * len(starts))
        out += [pad + "| " + " | ".join(row) + " |" for row in rows[1:]]
        i = end + 1
    return "\n".join(out)


def markdown(text: str) -> str:
    """The docstring ``text`` with its reST roles, ``::`` markers and tables made Markdown."""
    return _tables(_LITERAL.sub(":", _ROLE.sub(_role, text)))


class RstToMarkdown(griffe.Extension):
    """Rewrites every docstring of the loaded package once its tree is complete."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = markdown(obj.docstring.value)

    def on_package(self, *, pkg: griffe.Module, **kwargs: Any) -> None:
        self.on_object(obj=pkg)  # on_object skips the package itself
