"""Training runs on disk: the run directory, its lock, and loading a trained model.

A run directory (``jrnn train --out``) holds ``config.json`` (the run's
:class:`~jrnn.run_config.RunConfig` and its resumes), ``metrics.jsonl``, ``metrics.png``,
``checkpoints/`` (orbax) and, once finished, ``result.json``. One process at a time owns
it: :func:`lock_run_dir` takes an exclusive OS lock (``filelock``) on ``.lock`` inside
it, which the OS releases when the process ends, killed or not.

:func:`load_run` gives the trained model back with every option of its run, so that
nothing (the activation above all) has to be restated::

    run = jrnn.load_run("runs/adding-20250101-120000")
    outputs = run.predict(xs)        # (B, O), with the run's activation
    run.evaluate()                   # the test metrics that result.json holds
"""

from __future__ import annotations

import dataclasses
import time
from functools import partial
from pathlib import Path

import jax
import jax.numpy as jnp
import optax

from jrnn._src.extras import missing_extra
from jrnn.batch import Batch
from jrnn.cli.checkpoint import (
    CONFIG_FILE,
    CheckpointError,
    TrainState,
    close,
    latest_step,
    open_manager,
    read_config,
    restore,
)
from jrnn.model import ModelParams, apply, init_model
from jrnn.run_config import RunConfig
from jrnn.tasks import Task, recorded_task, run_task
from jrnn.train import evaluate

__all__ = [
    "LOCK_FILE",
    "Run",
    "RunDirError",
    "build_optimizer",
    "create_default_run_dir",
    "initial_state",
    "learning_rate",
    "load_run",
    "lock_run_dir",
]

LOCK_FILE = ".lock"


class RunDirError(RuntimeError):
    """A run directory that cannot be used: in use, not creatable, not writable."""


def learning_rate(config: RunConfig) -> optax.Schedule:
    """The run's learning rate as a function of the step (``config`` checked its options)."""
    if config.schedule == "cosine":
        return optax.warmup_cosine_decay_schedule(
            0.0, config.lr, config.warmup, max(config.steps, config.warmup + 1)
        )
    if config.warmup:
        return optax.linear_schedule(0.0, config.lr, config.warmup)
    return optax.constant_schedule(config.lr)


def build_optimizer(config: RunConfig) -> optax.GradientTransformation:
    """The run's optax chain: ``clip_by_global_norm(clip)`` (if ``clip > 0``), then the
    optimiser with a constant or warm-up + cosine-decay learning rate."""
    rate: float | optax.Schedule = config.lr
    if config.schedule == "cosine" or config.warmup:
        rate = learning_rate(config)
    opt = {
        "adam": lambda: optax.adam(rate),
        "adamw": lambda: optax.adamw(rate, weight_decay=1e-4),
        "sgd": lambda: optax.sgd(rate, momentum=0.9),
        "rmsprop": lambda: optax.rmsprop(rate),
    }[config.optimizer]()
    return optax.chain(optax.clip_by_global_norm(config.clip), opt) if config.clip > 0 else opt


def initial_state(
    config: RunConfig, task: Task | None = None
) -> tuple[optax.GradientTransformation, TrainState]:
    """The optimiser and the step-0 :class:`~jrnn.cli.checkpoint.TrainState` of a run (of
    ``task``, by default the config's: :func:`~jrnn.tasks.run_task`)."""
    task = run_task(config) if task is None else task
    optimizer = build_optimizer(config)
    key_params, run_key = jax.random.split(jax.random.PRNGKey(config.seed))
    init = partial(
        init_model,
        input_size=task.input_size,
        hidden_size=config.hidden,
        output_size=task.output_size,
        num_layers=config.layers,
        kernel_init=config.kernel_init,
        recurrent_init=config.recurrent_init,
        bias_init=config.bias_init,
        head_init=config.kernel_init,
    )
    params = jax.jit(init)(key_params)  # one compiled program, not one per eager op
    state = TrainState(params, optimizer.init(params), jnp.asarray(0, jnp.int32), run_key)
    return optimizer, state


def _create(path: Path, *, exist_ok: bool) -> None:
    try:
        path.mkdir(parents=True, exist_ok=exist_ok)
    except FileExistsError:
        raise
    except OSError as err:
        raise RunDirError(f"cannot create --out {path}: {err.strerror or err}") from err


def create_default_run_dir(task: str, root: str | Path = "runs") -> Path:
    """Creates and returns ``root/<task>-<date>-<time>``, or, if another run took that name
    in the same second, the first free ``...-2``, ``...-3``: the folder is created
    atomically, so two runs never share one."""
    base = Path(root) / f"{task}-{time.strftime('%Y%m%d-%H%M%S')}"
    for n in range(1, 10_000):
        path = base if n == 1 else base.with_name(f"{base.name}-{n}")
        try:
            _create(path, exist_ok=False)
            return path
        except FileExistsError:
            continue
    raise RunDirError(f"cannot find a free run folder name next to {base}")


def lock_run_dir(run_dir: str | Path):
    """Creates ``run_dir`` if needed and takes its exclusive lock; returns the acquired
    ``filelock.FileLock`` (release it, or use it as a context manager).

    Raises:
        RunDirError: the folder cannot be created or written, or another process holds it.
    """
    try:
        from filelock import FileLock, Timeout
    except ModuleNotFoundError as err:
        raise missing_extra(err, "jrnn train's run folders") from None

    run_dir = Path(run_dir)
    _create(run_dir, exist_ok=True)
    lock = FileLock(run_dir / LOCK_FILE, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise RunDirError(
            f"--out {run_dir} is in use by another jrnn train (it holds {run_dir / LOCK_FILE}); "
            "wait for it to end or choose another --out"
        ) from None
    except OSError as err:
        raise RunDirError(f"cannot write in --out {run_dir}: {err.strerror or err}") from err
    return lock


@dataclasses.dataclass(frozen=True)
class Run:
    """A trained model with every option of its run.

    Attributes:
        params: the model (:class:`~jrnn.model.ModelParams`) of the newest checkpoint.
        config: the run's :class:`~jrnn.run_config.RunConfig` (task, activation, sizes,
            optimiser, ...), as the run last used it.
        step: the optimiser steps those params have taken.
        path: the run directory.
    """

    params: ModelParams
    config: RunConfig
    step: int
    path: Path
    # a --data run whose file is gone: its task as the folder recorded it (tasks.recorded_task)
    recorded: Task | None = dataclasses.field(default=None, repr=False, compare=False)

    @property
    def task(self) -> Task:
        return run_task(self.config) if self.recorded is None else self.recorded

    def predict(self, xs: jax.Array, lengths: jax.Array | None = None) -> jax.Array:
        """The model's outputs on ``xs`` `(B, T, F)`: `(B, O)`, or `(B, T, O)` for the
        many-to-many tasks (logits for the classification tasks)."""
        outputs, _ = apply(
            self.params,
            xs,
            activation=self.config.activation,
            return_sequences=self.task.return_sequences,
            lengths=lengths,
            impl=self.config.impl,
        )
        return outputs

    def evaluate(self, batch: Batch | None = None) -> dict[str, float]:
        """The metrics (loss, and accuracy for classification) on ``batch``; by default the
        task's test set at the run's ``seq_len`` and ``eval_size``, which reproduces
        ``result.json`` exactly."""
        if batch is None:
            batch = self.task.test_set(self.config.seq_len, self.config.eval_size)
        metrics = evaluate(
            self.params,
            batch,
            loss=self.task.loss,
            activation=self.config.activation,
            return_sequences=self.task.return_sequences,
            impl=self.config.impl,
            recall_steps=self.task.recall_steps,
        )
        return {k: float(v) for k, v in metrics.items()}


def load_run(path: str | Path) -> Run:
    """Loads the newest checkpoint of the run in ``path`` (a ``jrnn train --out`` folder).

    Raises:
        CheckpointError: no readable config or checkpoint, or one that does not match it.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"load_run: {path} does not exist")
    if not path.is_dir():
        raise CheckpointError(f"load_run: {path} is a file, not a run folder")
    if latest_step(path) is None:
        what = (
            "a run stopped before its first checkpoint"
            if (path / CONFIG_FILE).is_file()
            else f"no run (no {CONFIG_FILE}, no checkpoints)"
        )
        raise CheckpointError(f"load_run: {path} holds {what}: nothing to load")
    saved = read_config(path, advice="")
    try:
        config = RunConfig.from_dict(saved)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{path / 'config.json'} holds an invalid config: {err}") from err
    recorded = None
    if config.task == "data" and not Path(config.data).is_file() and "data_info" in saved:
        recorded = recorded_task(config.data, saved["data_info"])  # predicts; cannot test
    _, template = initial_state(config, recorded)
    manager = open_manager(path, create=False)
    try:
        state = restore(manager, template, path, advice="")
    finally:
        close(manager)
    return Run(state.params, config, int(state.step), path, recorded)
