"""The training loop of ``jrnn train``: chunks of jitted steps, logs, tests, checkpoints,
Ctrl-C, the progress display and the final report."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from collections.abc import Iterator, Mapping
from functools import partial
from pathlib import Path
from typing import Any, TextIO

import jax
import jax.numpy as jnp
import numpy as np

from jrnn._src.interrupts import ignored, interrupted_means
from jrnn.cli.checkpoint import TrainState, close, latest_step, save, write_json
from jrnn.cli.plot import title, try_plot
from jrnn.cli.rundir import (
    ActiveRun,
    TrainError,
    agree,
    check_data,
    claim_run_dir,
    make_config,
    model_options,
    open_run,
    write_errors,
)
from jrnn.cli.runs import learning_rate
from jrnn.distributed import gather_json
from jrnn.run_config import RunConfig
from jrnn.train import evaluate

__all__ = ["train"]


def train(
    options: RunConfig | Mapping[str, Any],
    out: str | Path | None = None,
    *,
    resume: bool = False,
    progress: bool = True,
    stream: TextIO | None = None,
) -> int:
    """Runs ``jrnn train``; returns the exit code (0 done, 1 stopped on a non-finite loss,
    130 interrupted with a checkpoint saved).

    Args:
        options: the run's options: a :class:`RunConfig`, or the options given (the others
            take the task's defaults; on ``resume``, the resumed run's own values).
        out: the run directory; ``None``: a new ``runs/<task>-<date>-<time>``.
        resume: continue the run in ``out`` from its newest checkpoint.
        progress: a progress bar (a line per ``log_every`` steps when stderr is not a
            terminal).
        stream: where the run's messages go (default ``sys.stdout``).

    In a multi-process job (after :func:`jrnn.distributed.initialize`) every process calls
    it with the same arguments: they are compared first (a difference is refused in every
    process), the run is data parallel over every device of the job, process 0 alone
    prints and writes the run folder's files, and all of them checkpoint, restore and stop
    together.

    Raises:
        TrainError, CheckpointError, RunDirError: the run cannot start or write its run
            directory (the message says why).
    """
    stream = sys.stdout if stream is None else stream
    given = options.to_dict() if isinstance(options, RunConfig) else dict(options)
    if jax.process_count() > 1:
        agree(given, out, resume)
    if resume and out is None:
        raise TrainError("--resume needs --out, the run directory to continue")
    config = None if resume else make_config(lambda: RunConfig.for_task(**given))
    if config is not None:
        check_data(config)  # before a run folder is made for it
    run_dir, lock = claim_run_dir(config, out, resume)
    try:
        with write_errors(run_dir):
            run = open_run(run_dir, config, given, resume, stream)
            if run is None:
                return 0
            # the jrnn program's Ctrl-C outside the loop (jrnn._src.interrupts): with its
            # config.json written, the folder resumes (at step 0 if nothing was saved yet)
            interrupted_means(f"jrnn train: interrupted; continue with --out {run_dir} --resume")
            try:
                code = _train_loop(run, progress)
            except BaseException:
                _close(run, quiet=True)
                raise
            _close(run)
            if code == 0:
                _report(run)
            return code
    finally:
        if lock is not None:
            lock.release()


def _close(run: ActiveRun, *, quiet: bool = False) -> None:
    """Waits for the checkpoint manager and closes it; redraws the plot."""
    try:
        close(run.manager)
    except Exception:
        if not quiet:
            raise
    if run.rows and run.primary:
        try_plot(run, final=True)


def _boundaries(start: int, stop: int, *every: int) -> list[int]:
    """Chunk ends after ``start``: multiples of any of ``every``, and ``stop``."""
    ends = {stop}
    for e in every:
        ends.update(range((start // e + 1) * e, stop, e))
    return sorted(x for x in ends if start < x <= stop)


def _chunk_fn(run: ActiveRun) -> Any:
    """The jitted ``n`` optimiser steps, each drawing its batch from ``fold_in(key, step)``;
    returns the new state, the per-step metrics and whether the params are finite."""
    config, task, step_fn = run.config, run.task, run.step_fn

    @partial(jax.jit, static_argnames="n")
    def run_chunk(state: TrainState, n: int):
        def body(s, _):
            batch = task.sample(jax.random.fold_in(s.key, s.step), config.batch, config.seq_len)
            params, opt_state, metrics = step_fn(s.params, s.opt_state, batch)
            return TrainState(params, opt_state, s.step + 1, s.key), metrics

        state, metrics = jax.lax.scan(body, state, length=n)
        leaves = jax.tree.leaves(state.params)
        return state, metrics, jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves]))

    return run_chunk


def _test_row(run: ActiveRun, batch: Any, step: int, split: str = "test") -> dict[str, Any]:
    metrics = evaluate(
        run.state.params, batch, recall_steps=run.task.recall_steps, **model_options(run.config)
    )
    return {"step": step, "split": split, **{k: float(v) for k, v in metrics.items()}}


def _held_out(run: ActiveRun) -> tuple[Any, str]:
    """What the evaluations during training use, and their rows' split: the validation set
    where the task keeps its test set for the end (your own data), else the test set."""
    if run.task.val_set is not None:
        return run.task.val_set(), "val"
    return run.task.test_set(run.config.seq_len, run.config.eval_size), "test"


class _CtrlC:
    pressed = False


@contextlib.contextmanager
def _ctrl_c() -> Iterator[_CtrlC]:
    """The first Ctrl-C asks the loop to save and stop after the running chunk; a second one
    kills the process at once with SIGINT's default action, so nothing (no garbage-collection
    callback, no ``except``) can swallow it and nothing is saved."""
    state = _CtrlC()
    # the terminal's stderr as it is now: a save may point descriptor 2 elsewhere meanwhile
    # (checkpoint.quiet_orbax), and the second Ctrl-C's message must still be seen
    stderr_fd = os.dup(2)

    def on_sigint(signum: int, frame: Any) -> None:
        if state.pressed:
            os.write(stderr_fd, b"\njrnn train: second Ctrl-C: stopped without saving\n")
            signal.signal(signal.SIGINT, signal.SIG_DFL)
            os.kill(os.getpid(), signal.SIGINT)
            return
        state.pressed = True
        os.write(
            stderr_fd,
            b"\njrnn train: Ctrl-C: saving a checkpoint after the running chunk "
            b"(Ctrl-C again to stop without saving)\n",
        )

    try:
        previous = None if ignored() else signal.signal(signal.SIGINT, on_sigint)
    except ValueError:  # not the main thread: Ctrl-C is the caller's business
        previous = None
    try:
        yield state
    finally:
        if previous is not None:
            signal.signal(signal.SIGINT, previous)
        os.close(stderr_fd)


class _Progress:
    """A tqdm bar when stderr is a terminal; else one plain line per ``log_every`` steps
    (a log file or a CI page gets no ``\\r`` redraws)."""

    def __init__(self, run: ActiveRun, start: int, enabled: bool) -> None:
        self.run, self.stream, self.bar, self.lines = run, sys.stderr, None, False
        if enabled and self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(
                total=run.config.steps,
                initial=start,
                unit="step",
                dynamic_ncols=True,
                file=self.stream,
            )
        else:
            self.lines = enabled

    def update(self, row: dict[str, Any], n: int, dt: float) -> None:
        seq_s = n * self.run.config.batch / dt
        if self.bar is not None:
            self.bar.update(n)
            self.bar.set_postfix(loss=f"{row['loss']:.4g}", seq_s=f"{seq_s:,.0f}")
        elif self.lines:
            print(
                f"jrnn train: step {row['step']}/{self.run.config.steps}: "
                f"{_shown(self.run, row)}, {seq_s:,.0f} seq/s",
                file=self.stream,
                flush=True,
            )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _shown(run: ActiveRun, metrics: Mapping[str, Any]) -> str:
    """``loss 0.1, accuracy 0.93 (blank baseline 0.917)``: the metrics beside the baseline
    accuracy, where the task has one."""
    text = f"loss {metrics['loss']:.4g}"
    if "accuracy" in metrics:
        text += f", accuracy {metrics['accuracy']:.4g}"
        if run.task.baseline_accuracy is not None:
            text += f" (baseline {run.task.baseline_accuracy(run.config.seq_len):.4g})"
    if "recall_accuracy" in metrics:
        text += f", recall {metrics['recall_accuracy']:.4g} (chance {run.task.recall_chance:.3g})"
    return text


def _train_loop(run: ActiveRun, progress: bool) -> int:
    """The chunked loop; returns the exit code (0, 1 non-finite, 130 interrupted)."""
    config = run.config
    run_chunk = _chunk_fn(run)
    held_out = _held_out(run)
    start = int(run.state.step)
    run.say(
        f"jrnn train: {title(config, start)}; out {run.run_dir}"
        + (f" (resumed at step {start})" if run.resumed else "")
    )
    if config.impl == "pallas" and jax.devices()[0].platform == "cpu":
        run.say(
            "jrnn train: note: --impl pallas on the CPU runs the Pallas kernels in interpret "
            "mode: slow, for testing them (--impl scan is the CPU's fast path)"
        )
    display = _Progress(run, start, progress and run.primary)
    code, t_start, stop = 0, time.perf_counter(), False
    with _ctrl_c() as ctrl_c:
        try:
            if start == 0 and not run.rows:  # a new run, or one resumed before a checkpoint
                run.log(_test_row(run, held_out[0], 0, held_out[1]))
            every = (config.log_every, config.eval_every, config.checkpoint_every)
            for end in _boundaries(start, config.steps, *every):
                # the processes of a job stop together: a Ctrl-C seen by any of them
                stop = any(gather_json(ctrl_c.pressed))
                if stop:
                    break
                code = _chunk(run, run_chunk, end, held_out, display, t_start)
                if code:
                    break
            if stop and code == 0 and int(run.state.step) < config.steps:
                step = save(run.manager, run.state, run.run_dir)
                run.say(
                    f"\njrnn train: interrupted; checkpoint saved at step {step} in "
                    f"{run.run_dir / 'checkpoints'}; continue with --out {run.run_dir} --resume"
                )
                code = 130
        finally:
            display.close()
    return code


def _chunk(
    run: ActiveRun,
    run_chunk: Any,
    end: int,
    held_out: tuple[Any, str],
    display: _Progress,
    t_start: float,
) -> int:
    """Trains up to step ``end``, logs, tests and checkpoints; 1 on a non-finite value."""
    config, state = run.config, run.state
    n = end - int(state.step)
    t0 = time.perf_counter()
    new_state, metrics, params_finite = run_chunk(state, n)
    metrics = jax.device_get(metrics)
    finite = np.all([np.isfinite(v) for v in metrics.values()], axis=0)  # (n,)
    if not (finite.all() and bool(params_finite)):
        # the metrics of step s are computed before its update: a non-finite update in the
        # chunk's last step shows only in the params
        bad = int(state.step) + (int(np.argmin(finite)) + 1 if not finite.all() else n)
        _stop_non_finite(run, f"the training loss or params became non-finite at step {bad}")
        return 1
    run.state = new_state
    dt = time.perf_counter() - t0
    row = {
        "step": end,
        "split": "train",
        **{k: float(np.mean(v)) for k, v in metrics.items()},
        "lr": float(learning_rate(config)(end - 1)),
        "steps_per_s": n / dt,
        "seconds": time.perf_counter() - t_start,
    }
    run.log(row)
    display.update(row, n, dt)
    checkpoint = end % config.checkpoint_every == 0 or end == config.steps
    if end % config.eval_every == 0 or checkpoint:  # test what a checkpoint would keep
        tested = _test_row(run, held_out[0], end, held_out[1])
        if not all(np.isfinite(v) for k, v in tested.items() if k not in ("step", "split")):
            _stop_non_finite(run, f"the {held_out[1]} loss became non-finite at step {end}")
            return 1
        run.log(tested)
        if run.primary:
            try_plot(run)
    if checkpoint:
        save(run.manager, run.state, run.run_dir)
    return 0


def _stop_non_finite(run: ActiveRun, what: str) -> None:
    last = latest_step(run.run_dir)
    run.say(
        f"\njrnn train: {what} (try a lower --lr or --clip 1); stopped, nothing saved "
        "after it. The last good checkpoint "
        + (
            f"(step {last}) is kept in {run.run_dir / 'checkpoints'}"
            if last is not None
            else "does not exist: none was saved yet"
        )
    )


def _report(run: ActiveRun) -> None:
    """result.json and the summary line of a finished run."""
    task, step = run.task, int(run.state.step)
    final = next((r for r in reversed(run.rows) if r["split"] == "test"), None)
    if final is None or final["step"] != step:  # e.g. resumed at the last step: test it now
        test_set = task.test_set(run.config.seq_len, run.config.eval_size)
        final = _test_row(run, test_set, step)
        run.log(final)
        if run.primary:
            try_plot(run, final=True)
    baseline = {"loss": task.baseline(run.config.seq_len), "predicts": task.baseline_name}
    if task.baseline_accuracy is not None:
        baseline["accuracy"] = task.baseline_accuracy(run.config.seq_len)
    if task.recall_chance is not None:
        baseline["recall_accuracy"] = task.recall_chance
    test = {k: v for k, v in final.items() if k not in ("step", "split")}
    result = {"step": step, "test": test, "baseline": baseline, "seconds": _seconds(run)}
    if run.primary:
        write_json(run.run_dir / "result.json", result)
    named = {"recall_accuracy": "recall"}
    shown = ", ".join(f"{named.get(k, k)} {v:.4g}" for k, v in baseline.items() if k != "predicts")
    run.say(
        f"jrnn train: done, step {step}: test {_shown(run, test)}; baseline {shown} "
        f"({task.baseline_name}); {run.run_dir}"
    )


def _seconds(run: ActiveRun) -> float:
    train_rows = [r for r in run.rows if r["split"] == "train" and "seconds" in r]
    return train_rows[-1]["seconds"] if train_rows else 0.0
