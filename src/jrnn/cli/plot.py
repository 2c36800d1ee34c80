"""``metrics.png``: the curves of a ``jrnn train`` run, and the title that names it."""

from __future__ import annotations

import math
import os
import sys
import time
from pathlib import Path
from typing import Any

from jrnn._src.extras import missing_extra

try:
    from matplotlib.figure import Figure
except ModuleNotFoundError as err:
    raise missing_extra(err, "jrnn train") from None

from jrnn.cli.rundir import ActiveRun
from jrnn.run_config import RunConfig
from jrnn.tasks import run_task

__all__ = ["PLOT_EVERY_S", "figure", "title", "try_plot"]


def title(config: RunConfig, step: int) -> str:
    """``adding T=100: relu RNN 1x64, identity recurrent init; adam, cosine schedule,
    lr=0.001, clip=1, batch 32; step 0 of 15000``: the run's one-line name (the start
    line, the figure's title)."""
    c = config
    name = Path(c.data).name if c.data else f"{c.task} T={c.seq_len}"
    return (
        f"{name}: {c.activation} RNN {c.layers}x{c.hidden}, "
        f"{c.recurrent_init} recurrent init; {c.optimizer}, {c.schedule} schedule, lr={c.lr:g}"
        + (f", warm-up {c.warmup}" if c.warmup else "")
        + f", clip={c.clip:g}, batch {c.batch}; step {step} of {c.steps}"
    )


def figure(rows: list[dict[str, Any]], config: RunConfig, step: int) -> Any:
    """The run's curves as a matplotlib Figure: the loss (named: MSE or cross-entropy) with
    the memoryless baseline, the accuracy with the baseline's (classification tasks), the
    learning rate and the gradient norm; the title names the model, schedule and steps."""
    task = run_task(config)
    train_rows = [r for r in rows if r["split"] == "train"]
    held = {
        "test": [r for r in rows if r["split"] == "test"],
        "validation": [r for r in rows if r["split"] == "val"],
    }
    panels = ["loss", "accuracy", "recall_accuracy", "lr", "grad_norm", "steps_per_s"]
    if task.loss != "cross_entropy":
        panels.remove("accuracy")
    if task.recall_steps is None:
        panels.remove("recall_accuracy")
    # matplotlib's object API: no pyplot state, no backend switched for the process
    # two rows, whatever the task: one figure size that reads scaled down as well
    fig = Figure(figsize=FIGSIZE)
    grid = fig.subplots(2, math.ceil(len(panels) / 2), squeeze=False)
    axes = [ax for row in grid for ax in row]
    for ax in axes[len(panels) :]:
        ax.remove()
    labels = {
        "loss": "MSE" if task.loss == "mse" else "cross-entropy",
        "accuracy": "accuracy",
        "recall_accuracy": f"accuracy on the last {task.recall_steps} steps (recall)",
        "lr": "learning rate",
        "grad_norm": "gradient norm (before clipping)",
        "steps_per_s": "optimiser steps per second",
    }
    baselines = {"loss": task.baseline(config.seq_len)}
    if task.baseline_accuracy is not None:
        baselines["accuracy"] = task.baseline_accuracy(config.seq_len)
    if task.recall_chance is not None:
        baselines["recall_accuracy"] = task.recall_chance
    for ax, key in zip(axes, panels, strict=False):
        curves = [("train", train_rows, "-"), *((k, v, "o-") for k, v in held.items())]
        for split, data, style in curves:
            pts = [(r["step"], r[key]) for r in data if key in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=split, ms=3, lw=1)
        if key in baselines:
            ax.axhline(
                baselines[key],
                color="gray",
                ls="--",
                lw=1,
                label="chance" if key == "recall_accuracy" else f"baseline ({task.baseline_name})",
            )
        if key in ("loss", "grad_norm"):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(labels[key])
        ax.grid(alpha=0.3, which="both")
        if key in ("loss", "accuracy", "recall_accuracy"):
            ax.legend(fontsize=8)
    fig.suptitle(title(config, step), fontsize=10)
    fig.tight_layout()
    return fig


FIGSIZE = (12.0, 7.0)
"""metrics.png's size in inches (at 110 dpi): the same for every task."""

PLOT_EVERY_S = 30.0
"""During training, metrics.png is redrawn at a test row at most this often (a drawing
takes about a second, the whole of a short run's chunk); at the end, always."""


def try_plot(run: ActiveRun, *, final: bool = False) -> None:
    """Redraws metrics.png if rows came since the last drawing, and (unless ``final``) at
    least :data:`PLOT_EVERY_S` seconds passed since it."""
    if len(run.rows) == run.plotted_rows:
        return
    if not final and time.monotonic() - run.plotted_at < PLOT_EVERY_S:
        return
    try:
        fig = figure(run.rows, run.config, int(run.state.step))
        # drawn beside it, then moved in: an interrupted drawing never leaves half a PNG
        tmp = run.run_dir / ".metrics.png.tmp"
        fig.savefig(tmp, dpi=110, format="png")
        os.replace(tmp, run.run_dir / "metrics.png")
    except Exception as err:  # a plot must never end or mask a training run
        print(f"jrnn train: warning: could not draw metrics.png: {err}", file=sys.stderr)
    run.plotted_rows, run.plotted_at = len(run.rows), time.monotonic()
