"""``jrnn train``: train a model on a task with optax, with progress, logs, plots and checkpoints.

The run directory (``--out``) receives:

* ``config.json``: the options that define the run (checked on ``--resume``);
* ``metrics.jsonl``: one JSON object per line, ``{"step", "split": "train"|"test", "loss",
  ...}``; train rows average the steps since the previous row;
* ``metrics.png``: the loss (and accuracy) curves, redrawn at every evaluation;
* ``checkpoints/``: orbax checkpoints of params, optimiser state, step and PRNG key, every
  ``--checkpoint-every`` steps, at the end, and on Ctrl-C;
* ``result.json``: the final test metrics and the baseline, when the run finishes.

The training loop runs ``--log-every`` steps per jitted call (data drawn on the device from
``fold_in(key, step)``), so a resumed run repeats an uninterrupted one bit for bit.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jrnn.activations import ACTIVATIONS
from jrnn.checkpoint import (
    CONFIG_FILE,
    CheckpointError,
    TrainState,
    check_config,
    latest_step,
    open_manager,
    restore,
    save,
    write_config,
)
from jrnn.distributed import batch_mesh, batch_sharding, replicate
from jrnn.model import init_model
from jrnn.params import INITIALIZERS
from jrnn.tasks import TASKS, Task, get_task
from jrnn.train import evaluate, make_train_step

__all__ = ["build_optimizer", "initial_state", "load_run", "main", "train"]

OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine")
# Options a resumed run must share with the checkpointed one: they define the model, the
# task or the optimiser state's structure. Others (lr, steps, batch, ...) may change, with a
# warning when they change the trajectory.
STRUCTURAL = (
    "task",
    "hidden",
    "layers",
    "activation",
    "optimizer",
    "schedule",
    "clipped",
    "warmed_up",
)
# options that do not change a resumed run's trajectory (the inits and the seed only act at
# step 0: a resumed run restores the params and the PRNG key)
COSMETIC = ("steps", "eval_size", "seed", "kernel_init", "recurrent_init", "bias_init")


class TrainError(RuntimeError):
    """A run that cannot start or continue; the message says why."""


def build_optimizer(
    name: str,
    lr: float,
    *,
    clip: float = 0.0,
    schedule: str = "constant",
    steps: int = 1,
    warmup: int = 0,
    momentum: float = 0.9,
    weight_decay: float = 1e-4,
) -> optax.GradientTransformation:
    """The CLI's optax chain: ``clip_by_global_norm(clip)`` (if ``clip > 0``), then the
    optimiser with a constant or warm-up + cosine-decay learning rate."""
    if name not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {list(OPTIMIZERS)}; got {name!r}")
    if schedule not in SCHEDULES:
        raise ValueError(f"schedule must be one of {list(SCHEDULES)}; got {schedule!r}")
    rate: float | optax.Schedule = lr
    if schedule == "cosine":
        rate = optax.warmup_cosine_decay_schedule(0.0, lr, warmup, max(steps, warmup + 1))
    elif warmup:
        rate = optax.linear_schedule(0.0, lr, warmup)
    opt = {
        "adam": lambda: optax.adam(rate),
        "adamw": lambda: optax.adamw(rate, weight_decay=weight_decay),
        "sgd": lambda: optax.sgd(rate, momentum=momentum or None),
        "rmsprop": lambda: optax.rmsprop(rate),
    }[name]()
    return optax.chain(optax.clip_by_global_norm(clip), opt) if clip > 0 else opt


def _number(kind: type, *, allow_zero: bool = False) -> Callable[[str], Any]:
    """An argparse type: a finite ``kind`` > 0 (>= 0 with ``allow_zero``)."""
    what = "a non-negative" if allow_zero else "a positive"

    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {what} {kind.__name__}; got {text!r}"
            ) from None
        if not ((value >= 0 if allow_zero else value > 0) and math.isfinite(value)):
            raise argparse.ArgumentTypeError(
                f"must be {'>= 0' if allow_zero else 'positive'}; got {text}"
            )
        return value

    parse.__name__ = f"{what[2:]} {kind.__name__}"
    return parse


def _positive(kind: type) -> Callable[[str], Any]:
    return _number(kind)


def _non_negative(kind: type) -> Callable[[str], Any]:
    return _number(kind, allow_zero=True)


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an int; got {text!r}") from None
    if not 0 <= value < 2**32:
        raise argparse.ArgumentTypeError(f"must lie in [0, 2^32); got {text}")
    return value


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="jrnn train",
        description="Train an Elman RNN with a dense readout on a sequence task (optax, "
        "hand-written BPTT), with a progress bar, metrics.jsonl, a PNG of the curves and "
        "resumable orbax checkpoints. The defaults train the IRNN of Le, Jaitly & Hinton "
        "(2015) (relu, identity recurrent init, N(0, 0.001^2) input weights) on the adding "
        "problem, T = 100, in about a minute; for a Keras-default tanh RNN pass --activation "
        "tanh --recurrent-init orthogonal --kernel-init glorot_uniform.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    a = p.add_argument
    a("--task", default="adding", choices=sorted(TASKS), help="the task (see jrnn.tasks)")
    a(
        "--seq-len",
        type=_positive(int),
        default=None,
        help="sequence length T (copy: blanks T; digits: fixed 8); default: the task's",
    )
    a("--hidden", type=_positive(int), default=64, help="hidden units per layer")
    a("--layers", type=_positive(int), default=1, help="stacked Elman layers")
    a("--activation", default="relu", choices=sorted(ACTIVATIONS))
    a(
        "--kernel-init",
        default="small_normal",
        choices=sorted(INITIALIZERS),
        help="init of the input and readout weights",
    )
    a("--recurrent-init", default="identity", choices=sorted(INITIALIZERS))
    a("--bias-init", default="zeros", choices=sorted(INITIALIZERS))
    a("--optimizer", default="adam", choices=OPTIMIZERS)
    a("--lr", type=_positive(float), default=1e-3, help="(peak) learning rate")
    a("--clip", type=_non_negative(float), default=1.0, help="global-norm clip; 0: none")
    a("--schedule", default="cosine", choices=SCHEDULES, help="learning-rate schedule")
    a("--warmup", type=_non_negative(int), default=0, help="linear warm-up steps")
    a("--steps", type=_positive(int), default=15000, help="optimiser steps in all")
    a("--batch", type=_positive(int), default=32, help="sequences per step")
    a("--seed", type=_seed, default=0, help="PRNG seed (params and data), in [0, 2^32)")
    a("--out", default=None, help="run directory (default: runs/<task>-<date>-<time>)")
    a("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    a(
        "--log-every",
        type=_positive(int),
        default=50,
        help="steps per jitted call and per metrics.jsonl train row",
    )
    a("--eval-every", type=_positive(int), default=500, help="steps between test evaluations")
    a(
        "--eval-size",
        type=_positive(int),
        default=1000,
        help="test sequences of the synthetic tasks (digits: its 360 held-out images)",
    )
    a("--checkpoint-every", type=_positive(int), default=1000, help="steps between checkpoints")
    a("--keep", type=_positive(int), default=3, help="checkpoints kept")
    a("--no-progress", dest="progress", action="store_false", help="no tqdm progress bar")
    a(
        "--data-parallel",
        action="store_true",
        help="split each batch over all local devices (params replicated, gradients "
        "all-reduced by XLA); --batch must be a multiple of the device count",
    )
    return p


def _config(args: argparse.Namespace, seq_len: int) -> dict[str, Any]:
    keys = (
        "task",
        "hidden",
        "layers",
        "activation",
        "kernel_init",
        "recurrent_init",
        "bias_init",
        "optimizer",
        "lr",
        "clip",
        "schedule",
        "warmup",
        "steps",
        "batch",
        "seed",
        "eval_size",
    )
    config = {k: getattr(args, k) for k in keys}
    config["seq_len"] = seq_len
    config["clipped"] = args.clip > 0
    config["warmed_up"] = args.warmup > 0
    config["data_parallel"] = bool(getattr(args, "data_parallel", False))
    return config


def _plot(run_dir: Path, rows: list[dict[str, Any]], title: str, baseline: float | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [r for r in rows if r["split"] == "train"]
    test = [r for r in rows if r["split"] == "test"]
    has_acc = any("accuracy" in r for r in rows)
    fig, axes = plt.subplots(1, 2 if has_acc else 1, figsize=(11 if has_acc else 6.5, 4))
    axes = np.atleast_1d(axes)
    ax = axes[0]
    if train:
        ax.plot([r["step"] for r in train], [r["loss"] for r in train], label="train", lw=1)
    if test:
        ax.plot([r["step"] for r in test], [r["loss"] for r in test], "o-", label="test", ms=3)
    if baseline is not None:
        ax.axhline(baseline, color="gray", ls="--", lw=1, label="memoryless baseline")
    ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3, which="both")
    ax.legend()
    if has_acc:
        ax = axes[1]
        for split, data, style in (("train", train, "-"), ("test", test, "o-")):
            pts = [(r["step"], r["accuracy"]) for r in data if "accuracy" in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=split, ms=3, lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel("accuracy")
        ax.set_ylim(0, 1)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(run_dir / "metrics.png", dpi=110)
    plt.close(fig)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a line cut short by a killed process is skipped."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _try_plot(run_dir: Path, rows: list[dict[str, Any]], title: str, baseline: float) -> None:
    try:
        _plot(run_dir, rows, title, baseline)
    except Exception as err:  # a plot must never end or mask a training run
        print(f"jrnn train: warning: could not draw metrics.png: {err}", file=sys.stderr)


def _boundaries(start: int, stop: int, *every: int) -> list[int]:
    """Chunk ends after ``start``: multiples of any of ``every``, and ``stop``."""
    ends = {stop}
    for e in every:
        ends.update(range((start // e + 1) * e, stop, e))
    return sorted(x for x in ends if start < x <= stop)


def _float_metrics(metrics: dict[str, Any]) -> dict[str, float]:
    return {k: float(v) for k, v in metrics.items()}


def initial_state(
    args: argparse.Namespace, task: Task
) -> tuple[optax.GradientTransformation, TrainState]:
    """The optimiser and the step-0 :class:`~jrnn.checkpoint.TrainState` of a run."""
    optimizer = build_optimizer(
        args.optimizer,
        args.lr,
        clip=args.clip,
        schedule=args.schedule,
        steps=args.steps,
        warmup=args.warmup,
    )
    key_params, run_key = jax.random.split(jax.random.PRNGKey(args.seed))
    params = init_model(
        key_params,
        task.input_size,
        args.hidden,
        task.output_size,
        num_layers=args.layers,
        kernel_init=args.kernel_init,
        recurrent_init=args.recurrent_init,
        bias_init=args.bias_init,
        head_init=args.kernel_init,
    )
    state = TrainState(params, optimizer.init(params), jnp.asarray(0, jnp.int32), run_key)
    return optimizer, state


def train(args: argparse.Namespace, out: Any = None) -> int:
    """Runs ``jrnn train`` with parsed ``args``; returns the exit code (0 done, 1 stopped on
    a non-finite loss, 130 interrupted with a checkpoint saved).

    Raises:
        TrainError, CheckpointError: the run cannot start (the message says why).
    """
    out = sys.stdout if out is None else out
    task = get_task(args.task)
    seq_len = args.seq_len if args.seq_len is not None else task.default_seq_len
    if task.fixed_seq_len is not None and seq_len != task.fixed_seq_len:
        raise TrainError(f"--seq-len: the {task.name} task has length {task.fixed_seq_len} only")
    if task.name == "adding" and seq_len < 2:
        raise TrainError("--seq-len: the adding problem needs at least 2 steps")
    devices = jax.local_devices()
    if args.data_parallel and args.batch % len(devices):
        raise TrainError(
            f"--data-parallel: --batch {args.batch} is not a multiple of the "
            f"{len(devices)} local devices"
        )
    if args.resume and args.out is None:
        raise TrainError("--resume needs --out, the run directory to continue")
    run_dir = Path(args.out or f"runs/{task.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainError(f"--out {run_dir} is a file, not a directory")
    config = _config(args, seq_len)

    # Never touch a directory that holds another run unless told to resume it, and check
    # that the run being resumed is this one before anything is written.
    existing = latest_step(run_dir)
    if args.resume:
        if existing is None:
            raise TrainError(f"--resume: no checkpoint in {run_dir}/checkpoints to resume from")
        changed = check_config(run_dir, config, STRUCTURAL)
        for diff in changed:
            if diff.split(":")[0] not in COSMETIC or (
                diff.startswith("steps") and args.schedule == "cosine"
            ):
                print(
                    f"jrnn train: warning: resuming with a changed option ({diff}); the run "
                    "will not repeat an uninterrupted one",
                    file=sys.stderr,
                )
    elif existing is not None:
        raise TrainError(
            f"--out {run_dir} already holds a run (checkpoint at step {existing}); pass "
            "--resume to continue it, or choose another --out (nothing was overwritten)"
        )
    elif run_dir.exists() and any(run_dir.iterdir()):
        raise TrainError(f"--out {run_dir} exists and is not empty; choose another --out")

    optimizer, state = initial_state(args, task)
    mesh = batch_mesh(devices) if args.data_parallel else None
    if mesh is not None:
        state = replicate(state, mesh)  # checkpoints restore onto the same sharding
    manager = open_manager(run_dir, keep=args.keep)
    metrics_path = run_dir / "metrics.jsonl"
    rows: list[dict[str, Any]] = []
    if args.resume:
        try:
            state = restore(manager, state, run_dir)
        except CheckpointError:
            manager.close()
            raise
        if int(state.step) > args.steps:
            manager.close()
            raise TrainError(
                f"--steps {args.steps} is below the checkpoint's step {int(state.step)}"
            )
        if metrics_path.exists():  # drop rows logged after the checkpoint (a repeat follows)
            rows = [r for r in _read_rows(metrics_path) if r["step"] <= int(state.step)]
    if args.resume:  # keep the run's own config; record what this resume changed
        saved = json.loads((run_dir / CONFIG_FILE).read_text())
        saved.setdefault("resumes", []).append({"step": int(state.step), "changed": changed})
        write_config(run_dir, saved)
    else:
        write_config(run_dir, config)
    metrics_path.write_text("".join(json.dumps(r) + "\n" for r in rows))

    options = {
        "loss": task.loss,
        "activation": args.activation,
        "return_sequences": task.return_sequences,
    }
    step_fn = make_train_step(optimizer, jit=False, **options)

    @partial(jax.jit, static_argnames="n")
    def run_chunk(state: TrainState, n: int):
        def body(s, _):
            batch = task.sample(jax.random.fold_in(s.key, s.step), args.batch, seq_len)
            if mesh is not None:  # each device draws and trains on its slice of the batch
                batch = jax.lax.with_sharding_constraint(batch, batch_sharding(mesh))
            params, opt_state, metrics = step_fn(s.params, s.opt_state, batch)
            return TrainState(params, opt_state, s.step + 1, s.key), metrics

        state, metrics = jax.lax.scan(body, state, length=n)
        leaves = jax.tree.leaves(state.params)
        return state, metrics, jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves]))

    test_set = task.test_set(seq_len, args.eval_size)
    title = (
        f"{task.name} T={seq_len}: {args.activation} RNN, {args.layers}x{args.hidden}, "
        f"{args.recurrent_init} recurrent init, {args.optimizer} lr={args.lr:g} "
        f"clip={args.clip:g}, batch {args.batch}"
    )
    baseline = task.baseline(seq_len)

    def log(row: dict[str, Any]) -> None:
        rows.append(row)
        with metrics_path.open("a") as f:
            f.write(json.dumps(row) + "\n")

    def stop_non_finite(what: str) -> None:
        last = latest_step(run_dir)
        print(
            f"\njrnn train: {what} (try a lower --lr or --clip 1); stopped, nothing saved "
            "after it. The last good checkpoint "
            + (
                f"(step {last}) is kept in {run_dir / 'checkpoints'}"
                if last is not None
                else "does not exist: none was saved yet"
            ),
            file=out,
            flush=True,
        )

    def test_row(step: int) -> dict[str, Any]:
        return {
            "step": step,
            "split": "test",
            **_float_metrics(evaluate(state.params, test_set, **options)),
        }

    interrupted = False

    def on_sigint(signum, frame):
        nonlocal interrupted
        if interrupted:  # a second Ctrl-C: stop without saving once the running chunk returns
            raise KeyboardInterrupt
        interrupted = True

    previous_handler = None
    try:
        previous_handler = signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: Ctrl-C is the caller's business
        pass

    start = int(state.step)
    print(
        f"jrnn train: {title}; steps {start} -> {args.steps}; out {run_dir}"
        + (f" (resumed at step {start})" if args.resume else ""),
        file=out,
        flush=True,
    )
    bar = None
    if args.progress:
        from tqdm.auto import tqdm

        bar = tqdm(
            total=args.steps, initial=start, unit="step", dynamic_ncols=True, file=sys.stderr
        )
    code = 0
    t_start = time.perf_counter()
    try:
        if start == 0 and not args.resume:
            log(test_row(0))
        for end in _boundaries(
            start, args.steps, args.log_every, args.eval_every, args.checkpoint_every
        ):
            if interrupted:
                break
            n = end - int(state.step)
            t0 = time.perf_counter()
            new_state, metrics, params_finite = run_chunk(state, n)
            metrics = jax.device_get(metrics)
            finite = np.all([np.isfinite(v) for v in metrics.values()], axis=0)  # (n,)
            if not (finite.all() and bool(params_finite)):
                # the metrics of step s are computed before its update: a non-finite update
                # in the chunk's last step shows only in the params
                bad = int(state.step) + (int(np.argmin(finite)) + 1 if not finite.all() else n)
                stop_non_finite(f"the training loss or params became non-finite at step {bad}")
                code = 1
                break
            state = new_state
            dt = time.perf_counter() - t0
            row = {
                "step": end,
                "split": "train",
                **{k: float(np.mean(v)) for k, v in metrics.items()},
                "steps_per_s": n / dt,
                "seconds": time.perf_counter() - t_start,
            }
            log(row)
            if bar is not None:
                bar.update(n)
                bar.set_postfix(loss=f"{row['loss']:.4g}", seq_s=f"{n * args.batch / dt:,.0f}")
            checkpoint = end % args.checkpoint_every == 0 or end == args.steps
            if end % args.eval_every == 0 or checkpoint:  # test what a checkpoint would keep
                tested = test_row(end)
                if not all(np.isfinite(v) for k, v in tested.items() if k not in ("step", "split")):
                    stop_non_finite(f"the test loss became non-finite at step {end}")
                    code = 1
                    break
                log(tested)
                _try_plot(run_dir, rows, title, baseline)
            if checkpoint:
                save(manager, state)
        if interrupted and code == 0 and int(state.step) < args.steps:
            step = save(manager, state)
            print(
                f"\njrnn train: interrupted; checkpoint saved at step {step} in "
                f"{run_dir / 'checkpoints'}; continue with the same options and --resume",
                file=out,
                flush=True,
            )
            code = 130
    finally:
        if bar is not None:
            bar.close()
        manager.wait_until_finished()
        manager.close()
        if previous_handler is not None:
            signal.signal(signal.SIGINT, previous_handler)
        if rows:
            _try_plot(run_dir, rows, title, baseline)

    if code == 0:
        final = next(r for r in reversed(rows) if r["split"] == "test")
        if final["step"] != int(state.step):  # e.g. resumed at the last step: test it now
            final = test_row(int(state.step))
            log(final)
        result = {
            "step": int(state.step),
            "test": {k: v for k, v in final.items() if k not in ("step", "split")},
            "baseline": {"loss": baseline, "predicts": task.baseline_name},
            "seconds": time.perf_counter() - t_start,
        }
        (run_dir / "result.json").write_text(json.dumps(result, indent=2) + "\n")
        shown = ", ".join(f"{k} {v:.4g}" for k, v in result["test"].items())
        print(
            f"jrnn train: done, step {result['step']}: test {shown} (baseline loss "
            f"{baseline:.4g}, {task.baseline_name}); {run_dir}",
            file=out,
            flush=True,
        )
    return code


def load_run(run_dir: str | Path) -> tuple[TrainState, dict[str, Any]]:
    """Loads a run's newest checkpoint: ``(state, config)``; ``state.params`` is the model.

    Example::

        state, config = load_run("runs/adding-irnn-T150")
        outputs, _ = jrnn.model.apply(state.params, xs, activation=config["activation"])
    """
    run_dir = Path(run_dir)
    try:
        config = json.loads((run_dir / CONFIG_FILE).read_text())
    except (OSError, ValueError) as err:
        raise CheckpointError(f"{run_dir} holds no readable {CONFIG_FILE}: {err}") from err
    args = parser().parse_args([])
    for k, v in config.items():
        if hasattr(args, k):
            setattr(args, k, v)
    _, template = initial_state(args, get_task(args.task))
    manager = open_manager(run_dir)
    try:
        return restore(manager, template, run_dir), config
    finally:
        manager.close()


def main(argv: list[str] | None = None) -> int:
    """``jrnn train`` entry point."""
    args = parser().parse_args(argv)
    try:
        return train(args)
    except (TrainError, CheckpointError) as err:
        print(f"jrnn train: error: {err}", file=sys.stderr)
        return 2
