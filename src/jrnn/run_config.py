"""The options of a training run (``jrnn train``), described once.

:class:`RunConfig` is one frozen dataclass. Each field's metadata carries its help text,
its check and what a resumed run may do with it, and everything else is derived from
it: the command line's options and their shown defaults (:mod:`jrnn.cli`), the check of
a resumed run against the one it continues, ``config.json`` and :func:`jrnn.load_run`.

What ``--resume`` may change:

* ``structural``: defines the model, the task or the optimiser state's structure; a
  resumed run must keep it (``clip`` and ``warmup`` are structural only in whether they
  are 0: a clip or a warm-up adds optimiser state);
* ``trajectory``: may change, with a warning (the resumed run no longer repeats an
  uninterrupted one); ``steps`` belongs here under the cosine schedule, whose length it
  sets;
* ``cosmetic``: acts only at step 0 (initialisers, seed: a resumed run restores the
  params and the PRNG key) or on what is logged and kept, never on the params.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

# the names only (jrnn._src.names): the jrnn program's parser reads this module without jax
from jrnn._src import names
from jrnn._src.names import ACTIVATIONS, IMPLS, INITIALIZERS, TASKS

__all__ = [
    "BIAS_INITIALIZERS",
    "COSMETIC",
    "DATA_OPTIONS",
    "OPTIMIZERS",
    "SCHEDULES",
    "STRUCTURAL",
    "TASK_DEFAULTS",
    "TRAJECTORY",
    "TYPES",
    "RunConfig",
    "field_type",
    "option_help",
]

STRUCTURAL, TRAJECTORY, COSMETIC = "structural", "trajectory", "cosmetic"
DATA_OPTIONS = ("loss", "output", "val_fraction", "test_fraction")
"""The options of a ``--data`` run alone (a task has its own loss, readout and sets)."""
OPTIMIZERS = ("adam", "adamw", "sgd", "rmsprop")
SCHEDULES = ("constant", "cosine")
# identity and orthogonal need a square matrix, the glorot / lecun / he ones a fan-in and
# fan-out: none of them means anything for a bias vector
BIAS_INITIALIZERS = ("pytorch", "small_normal", "zeros")

_TANH = {"activation": "tanh", "recurrent_init": "orthogonal", "kernel_init": "glorot_uniform"}
# Settings measured to learn each task (README, "jrnn train"); the field defaults are the
# adding task's, the IRNN of Le, Jaitly & Hinton (2015). The one source of a run's defaults,
# seq_len included; they live here, not in jrnn.tasks' entries, because `jrnn train --help`
# shows them without importing jax. What a task is (sizes, loss, the lengths it has) is
# its entry in jrnn.tasks.TASKS.
TASK_DEFAULTS: dict[str, dict[str, Any]] = {
    "adding": {},
    "copy": {**_TANH, "seq_len": 10, "hidden": 256, "lr": 1e-3, "batch": 64, "steps": 8000},
    "sine": {**_TANH, "hidden": 32, "lr": 3e-3, "steps": 2000, "eval_every": 250},
    # your own sequences (--data): a tanh RNN with Keras' init, a short run to start from
    "data": {**_TANH, "lr": 3e-3, "steps": 2000, "eval_every": 250, "checkpoint_every": 500},
    "digits": {**_TANH, "seq_len": 8, "hidden": 128, "lr": 3e-3, "batch": 64, "steps": 3000},
}
names.agree("task defaults", (*names.TASKS, "data"), TASK_DEFAULTS)


def _positive(value: Any) -> str | None:
    return None if value > 0 and math.isfinite(value) else f"must be positive; got {value}"


def _non_negative(value: Any) -> str | None:
    return None if value >= 0 and math.isfinite(value) else f"must be >= 0; got {value}"


def _fraction(value: float) -> str | None:
    return None if 0 <= value < 1 else f"must lie in [0, 1); got {value}"


def _seed(value: int) -> str | None:
    return None if 0 <= value < 2**32 else f"must lie in [0, 2^32); got {value}"


def _check_choice(names: list[str]) -> Callable[[Any], str | None]:
    return lambda v: None if v in names else f"must be one of {names}; got {v!r}"


def _option(
    default: Any,
    help: str,
    resume: str,
    check: Callable[[Any], str | None] | None = None,
    *,
    choices: Any = None,
) -> Any:
    """A field whose metadata holds its ``help``, its ``resume`` kind, its value ``check``
    (``None`` or a message) and its ``choices`` (a name registry, listed sorted, or a tuple,
    listed in its order; ``None``: any value of the type)."""
    if choices is not None:
        choices = sorted(choices) if isinstance(choices, Mapping) else list(choices)
        check = _check_choice(sorted(choices))
    meta = {"help": help, "resume": resume, "check": check, "choices": choices}
    return dataclasses.field(default=default, metadata=meta)


TYPES: dict[str, type] = {"int": int, "float": float, "bool": bool, "str": str}
"""The types of :class:`RunConfig`'s fields, by the annotation's text."""


def field_type(field: dataclasses.Field) -> type:
    """The type of a :class:`RunConfig` field (``field.type`` is the annotation's text: the
    annotations here are postponed)."""
    return TYPES[str(field.type)]


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Every option of a training run; build it with :meth:`for_task` to get the task's
    defaults. Raises ``TypeError``/``ValueError`` naming the option on a bad value."""

    task: str = _option(
        "adding",
        "the task (see jrnn.tasks); data: your own, from --data",
        STRUCTURAL,
        choices=(*TASKS, "data"),
    )
    data: str = _option(
        "",
        "an .npz of your own sequences to train on instead of a task: inputs (N, T, F), "
        "targets (N, O) / (N, T, O) floats or (N,) / (N, T) integer classes, optionally "
        "lengths (N,) (see jrnn.data)",
        STRUCTURAL,
    )
    loss: str = _option(
        "auto",
        "--data's loss: auto (cross_entropy for integer targets, else mse)",
        STRUCTURAL,
        choices=("auto", "mse", "cross_entropy"),
    )
    output: str = _option(
        "auto",
        "--data's readout: every step (many-to-many), the last (many-to-one), or auto "
        "(from the targets' rank)",
        STRUCTURAL,
        choices=("auto", "every", "last"),
    )
    val_fraction: float = _option(
        0.1, "--data's validation split, evaluated during training", STRUCTURAL, _fraction
    )
    test_fraction: float = _option(
        0.1, "--data's test split, evaluated at the end (result.json)", STRUCTURAL, _fraction
    )
    seq_len: int = _option(
        100,
        "sequence length T (copy: the blanks; digits: 8 only; --data: the file's)",
        TRAJECTORY,
        _positive,
    )
    hidden: int = _option(64, "hidden units per layer", STRUCTURAL, _positive)
    layers: int = _option(1, "stacked Elman layers", STRUCTURAL, _positive)
    activation: str = _option("relu", "the cell's nonlinearity", STRUCTURAL, choices=ACTIVATIONS)
    kernel_init: str = _option(
        "small_normal", "init of the input and readout weights", COSMETIC, choices=INITIALIZERS
    )
    recurrent_init: str = _option(
        "identity", "init of the recurrent weights", COSMETIC, choices=INITIALIZERS
    )
    bias_init: str = _option("zeros", "init of the biases", COSMETIC, choices=BIAS_INITIALIZERS)
    optimizer: str = _option("adam", "the optax optimiser", STRUCTURAL, choices=OPTIMIZERS)
    lr: float = _option(1e-3, "(peak) learning rate", TRAJECTORY, _positive)
    clip: float = _option(1.0, "global-norm gradient clip; 0: none", TRAJECTORY, _non_negative)
    schedule: str = _option(
        "cosine",
        "learning-rate schedule (cosine: warm-up, then decay to 0 at --steps)",
        STRUCTURAL,
        choices=SCHEDULES,
    )
    warmup: int = _option(0, "linear warm-up steps, below --steps", TRAJECTORY, _non_negative)
    steps: int = _option(15000, "optimiser steps in all", COSMETIC, _positive)
    batch: int = _option(32, "sequences per step", TRAJECTORY, _positive)
    seed: int = _option(0, "PRNG seed of the params and the data", COSMETIC, _seed)
    eval_size: int = _option(
        1000,
        "test sequences of the synthetic tasks (digits: its 360 held-out images)",
        COSMETIC,
        _positive,
    )
    log_every: int = _option(
        50,
        "steps per jitted call, metrics.jsonl train row and progress update",
        COSMETIC,
        _positive,
    )
    eval_every: int = _option(500, "steps between test evaluations", COSMETIC, _positive)
    checkpoint_every: int = _option(1000, "steps between checkpoints", COSMETIC, _positive)
    keep: int = _option(3, "checkpoints kept", COSMETIC, _positive)
    data_parallel: bool = _option(
        False,
        "split each batch over all local devices (params replicated, gradients all-reduced "
        "by XLA); --batch must be a multiple of the device count",
        TRAJECTORY,
    )
    impl: str = _option(
        "auto",
        "the recurrence: scan (the loops), pallas (the fused Pallas kernels) or auto "
        "(see jrnn.ScanOptions)",
        TRAJECTORY,
        choices=IMPLS,
    )

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            want = field_type(f)
            ok = isinstance(value, want) and (want is bool or not isinstance(value, bool))
            if want is float and isinstance(value, int) and not isinstance(value, bool):
                object.__setattr__(self, f.name, float(value))
                ok = True
            if not ok:
                raise TypeError(
                    f"{f.name} must be {'an' if f.type == 'int' else 'a'} {f.type}; "
                    f"got {type(value).__name__} {value!r}"
                )
            check = f.metadata["check"]
            problem = check(value) if check is not None else None
            if problem:
                raise ValueError(f"{f.name} {problem}")
        if (self.task == "data") != bool(self.data):
            raise ValueError(
                "data: --task data needs --data FILE"
                if self.task == "data"
                else f"task: --data trains on the file; the {self.task} task takes no --data"
            )
        changed = [
            f.name
            for f in dataclasses.fields(self)
            if f.name in DATA_OPTIONS and getattr(self, f.name) != f.default
        ]
        if changed and not self.data:
            raise ValueError(f"{changed[0]}: --{changed[0].replace('_', '-')} is for --data runs")
        if self.data:
            return self._check_steps()
        from jrnn.tasks import get_task  # the tasks' jax, once a run is configured

        task = get_task(self.task)
        if task.fixed_seq_len is not None and self.seq_len != task.fixed_seq_len:
            raise ValueError(f"seq_len: the {task.name} task has length {task.fixed_seq_len} only")
        if self.seq_len < task.min_seq_len:
            least = task.min_seq_len
            raise ValueError(f"seq_len: the {task.name} task needs at least {least} steps")
        self._check_steps()

    def _check_steps(self) -> None:
        if self.warmup >= self.steps:
            raise ValueError(
                f"warmup ({self.warmup}) must be below steps ({self.steps}): the run would "
                "end before its learning rate reached --lr"
            )

    @classmethod
    def for_task(cls, task: str | None = None, **options: Any) -> RunConfig:
        """The config of ``task`` with its defaults (:data:`TASK_DEFAULTS`), then ``options``;
        no ``task``: ``"data"`` if ``options`` name a ``data`` file, else ``"adding"``. A
        ``data`` path is kept absolute (a run folder's config names its file wherever it is
        read)."""
        if task is None:
            task = "data" if options.get("data") else "adding"
        if options.get("data"):
            options["data"] = str(Path(options["data"]).absolute())
        if task not in TASK_DEFAULTS:
            raise ValueError(f"unknown task {task!r}; expected one of {sorted(TASKS)}")
        return cls(task=task, **{**TASK_DEFAULTS[task], **options})

    @classmethod
    def from_dict(cls, saved: Mapping[str, Any]) -> RunConfig:
        """The config that :meth:`to_dict` wrote; keys it does not know are ignored, and
        options missing from older files take the task's defaults."""
        names = {f.name for f in dataclasses.fields(cls)}
        options = {k: v for k, v in saved.items() if k in names}
        return cls.for_task(options.pop("task", None), **options)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def replace(self, **changes: Any) -> RunConfig:
        return dataclasses.replace(self, **changes)

    def resume_changes(self, saved: RunConfig) -> dict[str, list[tuple[str, Any, Any]]]:
        """How this config differs from ``saved``, the run it would resume.

        Returns:
            ``{"structural": [...], "trajectory": [...], "cosmetic": [...]}``, each a list of
            ``(name, saved value, new value)``; a resume must refuse any structural one.
        """
        out: dict[str, list[tuple[str, Any, Any]]] = {
            STRUCTURAL: [],
            TRAJECTORY: [],
            COSMETIC: [],
        }
        for f in dataclasses.fields(self):
            old, new = getattr(saved, f.name), getattr(self, f.name)
            if old == new:
                continue
            kind = f.metadata["resume"]
            if f.name in ("clip", "warmup") and (old > 0) != (new > 0):
                kind = STRUCTURAL
            elif f.name == "steps" and self.schedule == "cosine":
                kind = TRAJECTORY
            out[kind].append((f.name, old, new))
        return out


def option_help(name: str) -> str:
    """``name``'s help text with its default, per task where the tasks differ."""
    field = {f.name: f for f in dataclasses.fields(RunConfig)}[name]
    if field.type == "bool":
        return f"{field.metadata['help']} (default: off)"
    default = field.default
    special = [f"{t} {_show(d[name])}" for t, d in TASK_DEFAULTS.items() if name in d]
    shown = _show(default) + (f"; {', '.join(special)}" if special else "")
    return f"{field.metadata['help']} (default: {shown})"


def _show(value: Any) -> str:
    if value == "":
        return "none"
    return f"{value:g}" if isinstance(value, float) else str(value)
