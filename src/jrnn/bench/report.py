"""What ``jrnn bench`` writes: its rows as JSON lines (a documented, versioned schema), a
text table, a Markdown report and the plots.

One row is one implementation doing one kind of work (``"forward"`` or ``"train"``) at one
shape and dtype. The JSON fields (schema ``jrnn.bench/1``):

========================  ===========================================================
``schema``                ``"jrnn.bench/1"``
``device_kind``           ``jax.devices()[0].device_kind`` (``"cpu"``, ``"NVIDIA H100 ..."``)
``backend``               ``jax.default_backend()``
``cpu``                   the CPU model
``versions``              ``{"python", "jax", "jaxlib", "jrnn", <peer>: version}``
``B``, ``T``, ``F``, ``H``  batch, steps, features, hidden units
``dtype``                 ``"float32"`` or ``"bfloat16"``
``impl``                  ``"jrnn"``, ``"jrnn-pallas"``, ``"flax"``, ``"torch-cudnn"``, ...
``work``                  ``"forward"`` or ``"train"`` (the loss and its gradient)
``status``                ``"ok"`` or ``"unavailable"`` (then ``reason`` says why)
``median_s``              seconds per call, the median of the timed repeats
``q1_s``, ``q3_s``        the quartiles; ``min_s``, ``max_s`` the extremes
``repeats``               how many calls were timed (after the warm-up)
``compile_s``             trace, lower and compile, seconds (``null`` for PyTorch)
``temp_bytes``            XLA's temporary bytes of the compiled call (``null`` if none)
``noisy``                 the spread is too wide to be a measurement (:func:`noisy`)
``remeasured``            the first timing was that wide, so it was timed once more
========================  ===========================================================

Noise: a time whose interquartile range is wider than :data:`NOISY_IQR` of its median
(another process took the cores meanwhile, say) is timed once more, with twice the repeats
(20 at least); if it is still that wide it is kept but flagged: ``~`` before it in the
table, *noisy* in the report, and the summary builds no ratio on its shape (which peer is
fastest is unknown there too).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from jrnn._src.extras import missing_extra

__all__ = ["NOISY_IQR", "SCHEMA", "json_lines", "markdown", "noisy", "plot", "table"]

SCHEMA = "jrnn.bench/1"
NOISY_IQR = 0.3
"""The widest interquartile range, as a fraction of the median, that counts as a
measurement. A quiet machine's rows are at 0.01-0.1; a contended one's reach 0.5-1."""


def noisy(q1: float | None, q3: float | None, median: float | None) -> bool:
    """The spread ``[q1, q3]`` is wider than :data:`NOISY_IQR` of ``median``."""
    if q1 is None or q3 is None or not median:
        return False
    return (q3 - q1) > NOISY_IQR * median


def json_lines(rows: Iterable[dict[str, Any]]) -> str:
    """One JSON object per line."""
    return "".join(json.dumps(r, sort_keys=True) + "\n" for r in rows)


def _ms(row: dict[str, Any]) -> str:
    if row["status"] != "ok":
        return "-"
    flag = "~" if row.get("noisy") else ""
    return f"{flag}{1e3 * row['median_s']:.3f} [{1e3 * row['q1_s']:.3f}, {1e3 * row['q3_s']:.3f}]"


def _groups(rows: Sequence[dict[str, Any]]) -> dict[tuple, dict[str, dict[str, dict]]]:
    """``{(B, T, F, H, dtype): {impl: {work: row}}}`` in the rows' order."""
    out: dict[tuple, dict[str, dict[str, dict]]] = {}
    for r in rows:
        key = (r["B"], r["T"], r["F"], r["H"], r["dtype"])
        out.setdefault(key, {}).setdefault(r["impl"], {})[r["work"]] = r
    return out


def _cells(works: dict[str, dict]) -> list[str]:
    fwd, train = works.get("forward"), works.get("train")
    first = train or fwd
    assert first is not None
    if first["status"] != "ok":
        return ["-", "-", "-", "-", first["reason"]]
    temp = train.get("temp_bytes") if train else None
    compile_s = train.get("compile_s") if train else None
    return [
        _ms(fwd) if fwd else "-",
        _ms(train) if train else "-",
        "-" if compile_s is None else f"{compile_s:.2f}",
        "-" if temp is None else f"{temp / 2**20:.1f}",
        "noisy (~): timed twice, still spread"
        if any(w.get("noisy") for w in (fwd, train) if w)
        else "",
    ]


HEADER = ["implementation", "forward ms [IQR]", "train ms [IQR]", "compile s", "temp MiB", "note"]


def table(rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table per shape and dtype (median and interquartile range)."""
    lines = []
    for (b, t, f, h, dtype), impls in _groups(rows).items():
        lines.append(f"B={b} T={t} F={f} H={h} {dtype}")
        body = [[name, *_cells(works)] for name, works in impls.items()]
        widths = [max(len(x) for x in col) for col in zip(HEADER, *body, strict=True)]
        widths[-1] = 0  # the note, last: not padded
        for cells in (HEADER, *body):
            padded = "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True))
            lines.append("  " + padded.rstrip())
        lines.append("")
    return "\n".join(lines)


def markdown(rows: Sequence[dict[str, Any]], command: str, when: str) -> str:
    """A report: the machine and versions, a summary (jrnn's train step against the fastest
    peer per shape) and a table per shape and dtype."""
    if not rows:
        return "# jrnn bench\n\nNo rows.\n"
    first = rows[0]
    versions = ", ".join(f"{k} {v}" for k, v in sorted(first["versions"].items()))
    out = [
        "# jrnn bench",
        "",
        f"Generated by `{command}` on {when}.",
        "",
        f"- Device: {first['device_kind']} ({first['backend']}); CPU: {first['cpu']}",
        f"- Versions: {versions}",
        "- Each time is the median of the timed calls after warm-up, with the interquartile "
        "range in brackets; JAX implementations interleaved call by call, DEER and PyTorch "
        "each in a block of its own. Train = `0.5 * sum(hs**2)` and its gradient with "
        "respect to the params (`jax.value_and_grad`; `loss.backward()` for PyTorch). "
        "Compile = trace, lower and "
        "compile of the train step; temp = XLA's temporary memory of it. A time marked ~ "
        f"is noisy: its interquartile range stayed wider than {NOISY_IQR:.0%} of its median "
        "when timed twice; the summary leaves it out.",
        "",
        "## Summary",
        "",
        "jrnn's train step (the scan loop, `jrnn`) against the fastest peer measured "
        "(a hand-written `lax.scan`, flax, haiku, Keras, PyTorch), and jrnn's fastest "
        "implementation where another of them (the kernels, say) beats the scan loop.",
        "",
        "| shape (B, T, F, H) | dtype | jrnn train ms | fastest peer | its train ms "
        "| fastest peer / jrnn | fastest jrnn |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    groups = _groups(rows)
    noisy_shapes = []
    for (b, t, f, h, dtype), impls in groups.items():
        mine = impls.get("jrnn", {}).get("train")
        timed = {
            n: w["train"] for n, w in impls.items() if "train" in w and w["train"]["status"] == "ok"
        }
        if any(r.get("noisy") for r in timed.values()):  # no ratio on noise, nor a "fastest"
            noisy_shapes.append(f"({b}, {t}, {f}, {h}) {dtype}")
            continue
        others = {n: r for n, r in timed.items() if not n.startswith("jrnn")}
        if not mine or mine["status"] != "ok" or not others:
            continue
        best = min(others, key=lambda n: others[n]["median_s"])
        ratio = others[best]["median_s"] / mine["median_s"]
        ours = min((n for n in timed if n.startswith("jrnn")), key=lambda n: timed[n]["median_s"])
        out.append(
            f"| ({b}, {t}, {f}, {h}) | {dtype} | {1e3 * mine['median_s']:.3f} | {best} "
            f"| {1e3 * others[best]['median_s']:.3f} | {ratio:.2f}x | {ours} |"
        )
    if noisy_shapes:
        out += ["", f"Left out, a train time there being noisy: {'; '.join(noisy_shapes)}."]
    for (b, t, f, h, dtype), impls in groups.items():
        out += ["", f"## (B, T, F, H) = ({b}, {t}, {f}, {h}), {dtype}", ""]
        out.append("| " + " | ".join(HEADER) + " |")
        out.append("|" + " --- |" * len(HEADER))
        for name, works in impls.items():
            out.append("| " + " | ".join([name, *_cells(works)]) + " |")
    return "\n".join(out) + "\n"


def _series(rows: Sequence[dict], vary: str, fixed: dict[str, int], dtype: str) -> dict:
    """``{impl: [(x, median_s)]}`` of train rows where only ``vary`` changes."""
    out: dict[str, list[tuple[int, float]]] = {}
    for r in rows:
        if r["work"] != "train" or r["status"] != "ok" or r["dtype"] != dtype:
            continue
        if all(r[k] == v for k, v in fixed.items() if k != vary):
            out.setdefault(r["impl"], []).append((r[vary], r["median_s"]))
    return {k: sorted(v) for k, v in out.items() if len(v) >= 2}


def plot(rows: Sequence[dict[str, Any]], path: str | Path) -> Path:
    """Time per train step against T and against H (the other sizes at the base shape,
    the most common B, F and H or T among the rows), per implementation, log axes: one
    PNG with a panel per axis that varies and dtype."""
    try:
        from matplotlib.figure import Figure
    except ModuleNotFoundError as err:
        raise missing_extra(err, "jrnn bench --plot", "bench") from None
    ok = [r for r in rows if r["work"] == "train" and r["status"] == "ok"]
    panels = []
    for dtype in sorted({r["dtype"] for r in ok}):
        mine = [r for r in ok if r["dtype"] == dtype]
        base = {k: max({r[k] for r in mine}, key=[r[k] for r in mine].count) for k in "BTFH"}
        for vary in ("T", "H"):
            series = _series(mine, vary, base, dtype)
            if series:
                panels.append((vary, dtype, base, series))
    fig = Figure(figsize=(5.2 * max(1, len(panels)), 4.0))
    axes = fig.subplots(1, max(1, len(panels)), squeeze=False)[0]
    for ax, (vary, dtype, base, series) in zip(axes, panels, strict=False):
        for impl, points in sorted(series.items()):
            xs, ys = zip(*points, strict=True)
            ax.plot(xs, [1e3 * y for y in ys], "o-", label=impl, ms=3, lw=1)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel(vary + (" (steps)" if vary == "T" else " (hidden units)"))
        ax.set_ylabel("train step, ms (median)")
        others = ", ".join(f"{k}={v}" for k, v in base.items() if k != vary)
        ax.set_title(f"{dtype}, {others}", fontsize=9)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=7)
    if not panels:
        axes[0].text(0.5, 0.5, "no series: give shapes that vary T or H", ha="center")
    where = f"{rows[0]['device_kind']} ({rows[0]['cpu']})" if rows else "?"
    fig.suptitle(f"jrnn bench on {where}", fontsize=10)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    return path
