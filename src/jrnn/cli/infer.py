"""``jrnn eval`` and ``jrnn predict``: a trained run's metrics and outputs, from its folder
(:func:`jrnn.load_run`), on its own test set or on a file of yours (:mod:`jrnn.data`)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from jrnn.cli.checkpoint import read_config
from jrnn.cli.rundir import TrainError, check_data
from jrnn.cli.runs import Run, load_run
from jrnn.data import check_inputs, load, read_npz

__all__ = ["eval_run", "predict"]


def _fits(run: Run, inputs: np.ndarray, where: str) -> None:
    features = run.task.input_size
    if inputs.shape[-1] != features:
        raise ValueError(
            f"{where}: inputs have {inputs.shape[-1]} features; the run's model takes {features}"
        )


def eval_run(run_dir: str, data: str | None, as_json: bool) -> int:
    """``jrnn eval``: prints the run's metrics on its test set (what ``result.json`` holds),
    or on all of ``data``; returns the exit code."""
    run = load_run(run_dir)
    task = run.task
    if data is None:
        check_data(run.config, read_config(run.path))  # the test split the run had
        metrics, on = run.evaluate(), f"the test set of {task.name}"
    else:
        own = load(data, loss=task.loss, return_sequences=task.return_sequences)
        _fits(run, np.asarray(own.batch.inputs), data)
        if own.loss == "cross_entropy" and own.output_size > task.output_size:
            raise ValueError(
                f"{data}: targets hold classes up to {own.output_size - 1}; the run's model "
                f"has {task.output_size} classes"
            )
        if own.loss == "mse" and own.output_size != task.output_size:
            raise ValueError(
                f"{data}: targets have {own.output_size} outputs; the run's model gives "
                f"{task.output_size}"
            )
        metrics, on = run.evaluate(own.batch), f"{data} ({own.size} sequences)"
    if as_json:
        print(json.dumps({"run": str(run.path), "step": run.step, "data": data, **metrics}))
    else:
        shown = ", ".join(f"{k} {v:.4g}" for k, v in metrics.items())
        print(f"jrnn eval: {run.path} (step {run.step}) on {on}: {shown}")
    return 0


def predict(run_dir: str, data: str, out: str) -> int:
    """``jrnn predict``: writes the run's outputs on ``data``'s inputs (an ``.npz`` with
    ``inputs`` and optionally ``lengths``; ``targets`` are not needed, or an ``.npy`` of
    inputs) to ``out`` (``.npy``); returns the exit code."""
    run = load_run(run_dir)
    lengths = None
    if data.endswith(".npy"):
        try:
            inputs = np.load(data, allow_pickle=False)
        except (OSError, ValueError) as err:
            raise ValueError(f"{data}: not a readable .npy file ({err})") from None
    else:
        arrays = read_npz(data, need=("inputs",))
        inputs, lengths = arrays["inputs"], arrays.get("lengths")
    inputs, lengths = check_inputs(inputs, lengths, source=data)
    _fits(run, inputs, data)
    valid = None if lengths is None else jnp.asarray(lengths)
    outputs = np.asarray(run.predict(jnp.asarray(inputs), valid))
    np.save(out, outputs)
    what = "logits" if run.task.loss == "cross_entropy" else "outputs"
    print(f"jrnn predict: wrote {out}: {what} {outputs.shape} {outputs.dtype}", file=sys.stderr)
    return 0


def run_command(args: Any) -> int:
    """``jrnn eval`` or ``jrnn predict`` from its parsed arguments; 2 with one line on a
    run folder or a file that cannot be used."""
    from jrnn.cli.checkpoint import CheckpointError

    try:
        if args.command == "eval":
            return eval_run(args.run, args.data, args.json)
        if not Path(args.out).parent.is_dir():
            raise ValueError(f"--out {args.out}: no such folder {Path(args.out).parent}")
        return predict(args.run, args.data, args.out)
    except (CheckpointError, TrainError, ValueError, OSError) as err:
        print(f"jrnn {args.command}: error: {err}", file=sys.stderr)
        return 2
