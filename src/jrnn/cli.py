"""The ``jrnn`` command: ``jrnn train`` (train a model on a task), ``jrnn launch`` (a
multi-process ``jrnn train`` job on this machine, :mod:`jrnn.launch`) and ``jrnn check`` (the
seed notebook's example and the gradient checks).

``jrnn train`` writes a run directory (``--out``, see :mod:`jrnn.runs`):

* ``config.json``: every option of the run (:class:`~jrnn.run_config.RunConfig`) and the
  history of its resumes;
* ``metrics.jsonl``: one JSON object per line, ``{"step", "split": "train"|"test", "loss",
  ...}``; train rows average the steps since the previous row;
* ``metrics.png``: loss, accuracy, learning rate and gradient norm, redrawn at every
  evaluation;
* ``checkpoints/``: orbax checkpoints of params, optimiser state, step and PRNG key, every
  ``--checkpoint-every`` steps, at the end, and on Ctrl-C;
* ``result.json``: the final test metrics and the baseline, when the run finishes.

The training loop runs ``--log-every`` steps per jitted call (data drawn on the device from
``fold_in(key, step)``), so a resumed run repeats an uninterrupted one bit for bit.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
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
import optax

from jrnn._checks import IMPLS
from jrnn._version import __version__
from jrnn.activations import ACTIVATIONS
from jrnn.checkpoint import (
    CONFIG_FILE,
    CheckpointError,
    TrainState,
    close,
    latest_step,
    open_manager,
    read_config,
    restore,
    save,
    write_config,
    write_json,
)
from jrnn.distributed import (
    batch_mesh,
    batch_sharding,
    cluster_processes,
    gather_json,
    initialize,
    replicate,
)
from jrnn.forward import forward
from jrnn.gradcheck import check_grads
from jrnn.launch import launch
from jrnn.notebook import SEED_H_LAST, seed_example, seed_loss
from jrnn.params import INITIALIZERS, init_params
from jrnn.run_config import (
    BIAS_INITIALIZERS,
    OPTIMIZERS,
    SCHEDULES,
    STRUCTURAL,
    TRAJECTORY,
    RunConfig,
    option_help,
)
from jrnn.runs import (
    LOCK_FILE,
    RunDirError,
    create_default_run_dir,
    initial_state,
    learning_rate,
    load_run,
    lock_run_dir,
)
from jrnn.tasks import TASKS, Task, get_task
from jrnn.train import evaluate, make_train_step

__all__ = ["TrainError", "check", "load_run", "main", "parser", "train"]


class TrainError(RuntimeError):
    """A run that cannot start or continue; the message says why."""


# ----------------------------------------------------------------------------- parsing


def _value_type(field: dataclasses.Field) -> Any:
    """An argparse ``type`` for a :class:`RunConfig` field: converts, then runs its check."""
    # field.type is the annotation's text (the annotations here are postponed)
    kind = {"int": int, "float": float, "str": str}[str(field.type)]
    check = field.metadata["check"]

    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {'an' if kind is int else 'a'} {kind.__name__}; got {text!r}"
            ) from None
        problem = check(value) if check is not None else None
        if problem:
            raise argparse.ArgumentTypeError(problem)
        return value

    parse.__name__ = kind.__name__
    return parse


def _choices(field: dataclasses.Field) -> list[str] | None:
    return {
        "task": sorted(TASKS),
        "activation": sorted(ACTIVATIONS),
        "kernel_init": sorted(INITIALIZERS),
        "recurrent_init": sorted(INITIALIZERS),
        "bias_init": list(BIAS_INITIALIZERS),
        "optimizer": list(OPTIMIZERS),
        "schedule": list(SCHEDULES),
        "impl": list(IMPLS),
    }.get(field.name)


TRAIN_DESCRIPTION = (
    "Train an Elman RNN with a dense readout on a sequence task (optax, hand-written BPTT), "
    "with progress, metrics.jsonl, a PNG of the curves and resumable orbax checkpoints. "
    "Each task has defaults measured to learn it (shown per task below): adding, the IRNN "
    "of Le, Jaitly & Hinton (2015) (relu, identity recurrent init, N(0, 0.001^2) input "
    "weights), T = 100, in about a minute; copy, sine and digits, a tanh RNN with Keras' "
    "default init. --resume continues the run in --out with its own options; an option "
    "given with it changes that option (a structural one is refused)."
)


def _add_train(sub: Any) -> None:
    p = sub.add_parser("train", help="train a model on a task", description=TRAIN_DESCRIPTION)
    for field in dataclasses.fields(RunConfig):
        flag = "--" + field.name.replace("_", "-")
        if field.type == "bool":
            p.add_argument(flag, action="store_true", default=argparse.SUPPRESS,
                           help=option_help(field.name))  # fmt: skip
            continue
        choices = _choices(field)
        p.add_argument(
            flag,
            type=None if choices else _value_type(field),  # argparse lists the choices
            choices=choices,
            default=argparse.SUPPRESS,  # only the options given reach the run's config
            metavar=None if choices else field.name.upper(),
            help=option_help(field.name),
        )
    p.add_argument("--out", help="run directory (default: runs/<task>-<date>-<time>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the run in --out from its newest checkpoint, with its own "
                   "options (default: off)")  # fmt: skip
    p.add_argument("--no-progress", dest="progress", action="store_false",
                   help="no progress bar, or progress lines when stderr is not a terminal "
                   "(default: shown)")  # fmt: skip
    g = p.add_argument_group(
        "multi-process jobs",
        "Every process of a job runs jrnn train with the same options and these three; "
        "together they train data parallel over all their devices, and process 0 alone "
        "prints and writes the logs. On Slurm, Open MPI, Kubernetes and Cloud TPU, JAX finds "
        "them by itself (leave them out). jrnn launch starts a job on this machine.",
    )
    g.add_argument(
        "--coordinator",
        metavar="HOST:PORT",
        help="process 0's host and a free port on it, the same for every process (default: "
        "none: one process, or the cluster's)",
    )
    g.add_argument(
        "--num-processes",
        type=_count(1),
        metavar="N",
        help="the number of processes in the job; 1: a run of its own, even inside a "
        "cluster job (default: 1, or the cluster's)",
    )
    g.add_argument(
        "--process-id",
        type=_count(0),
        metavar="I",
        help="this process's index, 0 to N - 1 (default: 0, or the cluster's)",
    )
    g.add_argument("--heartbeat-timeout", type=_count(1), default=30, metavar="SECONDS",
                   help="a process silent this long counts as dead, and the others stop "
                   "(default: 30)")  # fmt: skip


def _count(least: int) -> Any:
    """An argparse ``type``: an int of at least ``least``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an int; got {text!r}") from None
        if value < least:
            raise argparse.ArgumentTypeError(f"must be at least {least}; got {value}")
        return value

    parse.__name__ = "int"
    return parse


def _add_launch(sub: Any) -> None:
    p = sub.add_parser(
        "launch",
        help="run jrnn train as a job of several processes on this machine",
        description="Start N processes of one jrnn train job on 127.0.0.1 (a free port for "
        "the coordinator), each with its own devices; prefix their output with [i], forward "
        "Ctrl-C to all of them, and exit with the first failure's status. Usage: jrnn launch "
        "--processes N [--devices-per-process K] -- <jrnn train options>",
    )
    p.add_argument("--processes", type=_count(1), required=True, metavar="N",
                   help="processes in the job")  # fmt: skip
    p.add_argument("--devices-per-process", type=_count(1), default=1, metavar="K",
                   help="CPU devices of each process (on a machine with GPUs, GPUs i*K to "
                   "i*K + K - 1 for process i) (default: 1)")  # fmt: skip


def _add_check(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="the seed notebook's example and the gradient checks (the default command)",
        description="The seed notebook's example and the gradient checks (BPTT vs autodiff "
        "vs finite differences) on it and on a random model of the sizes below.",
    )
    positive = _value_type(next(f for f in dataclasses.fields(RunConfig) if f.name == "hidden"))
    for name, default, what in (
        ("batch", 8, "sequences of the random model"),
        ("steps", 64, "time steps of the random model"),
        ("features", 16, "input features of the random model"),
        ("hidden", 32, "hidden units of the random model"),
    ):
        p.add_argument(f"--{name}", type=positive, default=default,
                       help=f"{what} (default: {default})")  # fmt: skip
    seed = next(f for f in dataclasses.fields(RunConfig) if f.name == "seed")
    p.add_argument("--seed", type=_value_type(seed), default=0,
                   help="PRNG seed of the random model (default: 0)")  # fmt: skip


def parser() -> argparse.ArgumentParser:
    """The ``jrnn`` parser, with the ``train``, ``launch`` and ``check`` subcommands."""
    p = argparse.ArgumentParser(
        prog="jrnn",
        description="The simple (Elman) RNN in JAX: train models, check the hand-written BPTT.",
    )

    p.add_argument("--version", action="version", version=f"jrnn {__version__}")
    sub = p.add_subparsers(dest="command", metavar="{train,launch,check}", title="commands")
    _add_train(sub)
    _add_launch(sub)
    _add_check(sub)
    return p


def main(argv: list[str] | None = None) -> int:
    """The ``jrnn`` entry point; returns the exit code.

    ``jrnn`` alone, or with only ``jrnn check``'s options (``jrnn --batch 4``), runs
    ``jrnn check``.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or (argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version")):
        argv = ["check", *argv]
    rest: list[str] = []
    if argv[0] == "launch" and "--" in argv:  # jrnn launch ... -- <train options>
        argv, rest = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = parser().parse_args(argv)
    if args.command == "check":
        return check(args.batch, args.steps, args.features, args.hidden, args.seed)
    if args.command == "launch":
        try:
            return launch(rest, args.processes, args.devices_per_process)
        except ValueError as err:
            print(f"jrnn launch: error: {err}", file=sys.stderr)
            return 2
    job = ("coordinator", "num_processes", "process_id", "heartbeat_timeout")
    given = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "out", "resume", "progress", *job)
    }
    try:
        _join_job(*(getattr(args, k) for k in job))
        return train(given, args.out, resume=args.resume, progress=args.progress)
    except (TrainError, CheckpointError, RunDirError) as err:
        print(f"jrnn train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the loop: nothing to save
        print("\njrnn train: interrupted before training started", file=sys.stderr)
        return 130


def _join_job(
    coordinator: str | None, num_processes: int | None, process_id: int | None, heartbeat: int
) -> None:
    """Joins a multi-process job (:func:`jrnn.distributed.initialize`) when told to, or when
    JAX detects a cluster job of several processes; else does nothing."""
    given = {"--coordinator": coordinator, "--num-processes": num_processes,
             "--process-id": process_id}  # fmt: skip
    if num_processes == 1:  # one process, even inside a cluster job (a sweep of runs)
        return
    detected = cluster_processes() > 1
    if all(v is None for v in given.values()) and not detected:
        return
    if None in given.values() and not detected:
        missing = ", ".join(k for k, v in given.items() if v is None)
        raise TrainError(f"a multi-process job outside a cluster JAX knows needs {missing} too")
    if num_processes is not None and process_id is not None and process_id >= num_processes:
        raise TrainError(f"--process-id {process_id} is not below --num-processes {num_processes}")
    try:
        initialize(coordinator, num_processes, process_id, heartbeat_timeout_s=heartbeat)
    except Exception as err:  # JAX's runtime errors have no public type
        raise TrainError(f"cannot join the job (coordinator {coordinator}): {err}") from err


# ------------------------------------------------------------------------------- check


def check(
    batch: int = 8, steps: int = 64, features: int = 16, hidden: int = 32, seed: int = 0
) -> int:
    """``jrnn check``: prints the seed example's forward output (to compare with the
    notebook's printed numbers), then the gradient-check tables for that example (loss
    ``0.5 * ||h_T||^2``) and for a random model; returns 1 if a check fails."""
    with jax.enable_x64(True):
        params, xs, h0 = seed_example()
        _, h_last = forward(params, xs, h0)
        np.set_printoptions(precision=8, suppress=True)
        print("seed notebook example: forward(x, h0 = 0), h_T =")
        print(np.asarray(h_last))
        print(f"notebook printed:\n{SEED_H_LAST}")
        print(f"max |difference| = {np.max(np.abs(np.asarray(h_last) - SEED_H_LAST)):.2e}\n")
        seed_report = check_grads(params, xs, h0, loss=seed_loss)
        print(seed_report.table())
        print("\ntrue gradients of L = 0.5 * ||h_T||^2 (hand-written BPTT):")
        for name in ("w_x", "w_h", "b", "xs", "h0"):
            print(f"d{name} =\n{seed_report.bptt[name]}")

    key_p, key_x, key_h = jax.random.split(jax.random.PRNGKey(seed), 3)
    rparams = init_params(key_p, features, hidden)
    rxs = jax.random.normal(key_x, (batch, steps, features))
    rh0 = 0.5 * jax.random.normal(key_h, (batch, hidden))
    print()
    random_report = check_grads(rparams, rxs, rh0)
    print(random_report.table())
    ok = seed_report.ok() and random_report.ok()
    print(
        f"\ngradient checks {'passed' if ok else 'FAILED'} "
        "(BPTT vs autodiff rel <= 1e-10, vs finite differences rel <= 1e-7)"
    )
    return 0 if ok else 1


# ------------------------------------------------------------------------------- train


@dataclasses.dataclass
class _Run:
    """A run being trained: the loop advances ``state`` and appends to ``rows``."""

    config: RunConfig
    run_dir: Path
    resumed: bool
    optimizer: optax.GradientTransformation
    state: TrainState
    manager: Any
    mesh: Any
    rows: list[dict[str, Any]]
    stream: TextIO
    # process 0 of a multi-process job (or the only process) writes the logs, plots and
    # result.json and prints; every process trains, evaluates and checkpoints
    primary: bool = True
    # metrics.png as last drawn: how many rows it showed, and when (time.monotonic(); at
    # first the run's opening: a run shorter than PLOT_EVERY_S draws it once, at the end)
    plotted_rows: int = 0
    plotted_at: float = dataclasses.field(default_factory=time.monotonic)

    @property
    def task(self) -> Task:
        return get_task(self.config.task)

    @property
    def metrics_path(self) -> Path:
        return self.run_dir / "metrics.jsonl"

    def log(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        if self.primary:
            with self.metrics_path.open("a") as f:
                f.write(json.dumps(row) + "\n")

    def say(self, text: str) -> None:
        if self.primary:
            print(text, file=self.stream, flush=True)


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
        _agree(given, out, resume)
    if resume and out is None:
        raise TrainError("--resume needs --out, the run directory to continue")
    config = None if resume else _make_config(lambda: RunConfig.for_task(**given))
    run_dir, lock = _claim_run_dir(config, out, resume)
    try:
        with _write_errors(run_dir):
            run = _open_run(run_dir, config, given, resume, stream)
            if run is None:
                return 0
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


def _agree(given: dict[str, Any], out: str | Path | None, resume: bool) -> None:
    """Refuses, in every process of a multi-process job and before anything is written,
    a job whose processes were given different train options."""
    seen = gather_json(
        {
            **given,
            "out": None if out is None else str(Path(out).absolute()),
            "resume": resume,
            # the same program everywhere: versions that could compile different steps
            "jrnn_version": __version__,
            "jax_version": jax.__version__,
        }
    )
    differ = []
    for name in sorted({k for s in seen for k in s}):
        values = [s.get(name, "(not given)") for s in seen]
        if len({json.dumps(v) for v in values}) > 1:
            shown = ", ".join(f"{v} on process {i}" for i, v in enumerate(values))
            label = name.replace("_", " ") if name.endswith("_version") else "--" + name
            differ.append(f"{label.replace('_', '-')}: {shown}")
    if differ:
        raise TrainError(
            "the processes of this job were started with different options (every process "
            "must get the same train options):\n  " + "\n  ".join(differ)
        )


def _claim_run_dir(
    config: RunConfig | None, out: str | Path | None, resume: bool
) -> tuple[Path, Any]:
    """The run directory, checked (:func:`_check_run_dir`) and locked
    (:func:`~jrnn.runs.lock_run_dir`); returns it and the lock. In a multi-process job only
    process 0 does this and holds the lock; the others take its folder, or its refusal."""
    group = jax.process_count() > 1
    lock, run_dir, refused = None, None, None
    if not group or jax.process_index() == 0:
        try:
            if out is None:
                assert config is not None  # train() refuses --resume without --out
                run_dir = create_default_run_dir(config.task)
            else:
                run_dir = Path(out)
                if not run_dir.is_dir():  # refuse before creating it (the lock's, if in use)
                    with _write_errors(run_dir):
                        _check_run_dir(run_dir, resume)
            lock = lock_run_dir(run_dir)
            try:
                with _write_errors(run_dir):
                    _check_run_dir(run_dir, resume)  # again, now that no other run can change it
            except BaseException:
                lock.release()
                raise
        except BaseException as err:  # in a job, the others must still hear of it
            if not group:
                raise
            refused = err
    if group:
        # an absolute path: the other processes may have another working directory
        mine: list[str | None] = [None if run_dir is None else str(Path(run_dir).absolute())]
        mine.append(None if refused is None else str(refused) or type(refused).__name__)
        path, reason = gather_json(mine)[0]
        if refused is not None:
            raise refused
        if reason is not None:
            raise TrainError(f"process 0 refused the run: {reason}")
        run_dir = Path(path)
    assert run_dir is not None  # claimed above, or the claim raised
    return run_dir, lock


def _make_config(make: Any) -> RunConfig:
    try:
        return make()
    except (TypeError, ValueError) as err:
        text = str(err)
        name = text.split(" ", 1)[0].rstrip(":")
        if name in {f.name for f in dataclasses.fields(RunConfig)}:
            text = "--" + name.replace("_", "-") + text[len(name) :]
        raise TrainError(text) from None


@contextlib.contextmanager
def _write_errors(run_dir: Path) -> Iterator[None]:
    """Turns a failed write in the run directory (read-only, full disk) into a TrainError."""
    try:
        yield
    except OSError as err:
        where = f" ({err.filename})" if err.filename else ""
        last = latest_step(run_dir)
        kept = f"; the last good checkpoint (step {last}) is kept" if last is not None else ""
        raise TrainError(
            f"cannot write in --out {run_dir}: {err.strerror or err}{where}{kept}"
        ) from err


def _check_run_dir(run_dir: Path, resume: bool) -> None:
    """Never touch a folder that holds another run unless told to resume it."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainError(f"--out {run_dir} is a file, not a directory")
    existing = latest_step(run_dir)
    if resume:
        if existing is None:
            raise TrainError(f"--resume: no checkpoint in {run_dir}/checkpoints to resume from")
    elif existing is not None:
        raise TrainError(
            f"--out {run_dir} already holds a run (checkpoint at step {existing}); pass "
            "--resume to continue it, or choose another --out (nothing was overwritten)"
        )
    elif run_dir.is_dir() and any(p.name != LOCK_FILE for p in run_dir.iterdir()):
        raise TrainError(f"--out {run_dir} exists and is not empty; choose another --out")


def _resume_config(
    run_dir: Path, given: dict[str, Any], stream: TextIO
) -> tuple[RunConfig, list[Any]] | None:
    """The config of a resumed run (its own, with the ``given`` options changed) and its
    resume history with this resume added; ``None`` when a finished run has nothing to do.
    Refuses (before any warning) what a resume cannot do."""
    saved_dict = read_config(run_dir)
    try:
        saved = RunConfig.from_dict(saved_dict)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"{run_dir / CONFIG_FILE} holds an invalid config: {err}") from None
    config = _make_config(lambda: saved.replace(**given))
    changes = config.resume_changes(saved)
    line = lambda c: f"{c[0]}: {c[1]!r} in the checkpointed run, {c[2]!r} now"
    if changes[STRUCTURAL]:
        raise CheckpointError(
            f"{run_dir} holds an incompatible run (its checkpoint was left as it is); "
            "differing options:\n  " + "\n  ".join(map(line, changes[STRUCTURAL]))
        )
    step = latest_step(run_dir)
    assert step is not None  # _check_run_dir found a checkpoint to resume from
    if step > config.steps:
        raise TrainError(f"--steps {config.steps} is below the checkpoint's step {step}")
    changed = {name: [old, new] for kind in changes.values() for name, old, new in kind}
    finished = step == config.steps and (run_dir / "result.json").exists()
    primary = jax.process_index() == 0  # the others of a multi-process job say nothing
    if finished and not changes[TRAJECTORY]:  # cosmetic changes alone train nothing
        if primary:
            print(
                f"jrnn train: {run_dir} finished at step {step}; nothing to do (raise "
                "--steps to train longer)",
                file=stream,
            )
        return None
    for change in changes[TRAJECTORY] if primary else ():
        print(
            f"jrnn train: warning: resuming with a changed option ({line(change)}); the run "
            "will not repeat an uninterrupted one",
            file=sys.stderr,
        )
    resumes = saved_dict.get("resumes", [])
    return config, [*resumes, {"step": step, "changed": changed}]


def _open_run(
    run_dir: Path, config: RunConfig | None, given: dict[str, Any], resume: bool, stream: TextIO
) -> _Run | None:
    """Set-up: the config (a resumed run's, checked), the state (restored on resume) and
    the run directory's config.json and metrics.jsonl."""
    resumes: list[Any] = []
    if resume:
        resumed = _resume_config(run_dir, given, stream)
        if resumed is None:
            return None
        config, resumes = resumed
    assert config is not None  # train() makes the config of a new run
    # a multi-process job is always data parallel, over every process's devices
    group = jax.process_count() > 1
    parallel = config.data_parallel or group
    devices = jax.devices() if group else jax.local_devices()
    what = "--data-parallel" if config.data_parallel else "a multi-process job"
    if parallel and config.impl == "pallas":
        raise TrainError(
            f"{what} does not take --impl pallas yet (XLA cannot split a Pallas "
            "kernel over the batch); use --impl scan or auto"
        )
    if parallel and config.batch % len(devices):
        raise TrainError(
            f"{what}: --batch {config.batch} is not a multiple of the "
            f"{len(devices)} {'devices of the job' if group else 'local devices'}"
        )
    optimizer, state = initial_state(config)
    mesh = batch_mesh(devices) if parallel else None
    if mesh is not None:
        state = replicate(state, mesh)  # checkpoints restore onto the same sharding
    manager = open_manager(run_dir, keep=config.keep)
    primary = jax.process_index() == 0
    run = _Run(config, run_dir, resume, optimizer, state, manager, mesh, [], stream, primary)
    if resume:
        try:
            run.state = restore(manager, state, run_dir)
        except CheckpointError:
            _close(run, quiet=True)
            raise
        if run.metrics_path.exists():  # drop rows logged after the checkpoint (a repeat follows)
            step = int(run.state.step)
            run.rows = [r for r in _read_rows(run.metrics_path) if r["step"] <= step]
    if primary:
        write_config(run_dir, {**config.to_dict(), "resumes": resumes})
        run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in run.rows))
    return run


def _close(run: _Run, *, quiet: bool = False) -> None:
    """Waits for the checkpoint manager and closes it; redraws the plot."""
    try:
        close(run.manager)
    except Exception:
        if not quiet:
            raise
    if run.rows and run.primary:
        _try_plot(run, final=True)


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a line cut short by a killed process is skipped."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def _boundaries(start: int, stop: int, *every: int) -> list[int]:
    """Chunk ends after ``start``: multiples of any of ``every``, and ``stop``."""
    ends = {stop}
    for e in every:
        ends.update(range((start // e + 1) * e, stop, e))
    return sorted(x for x in ends if start < x <= stop)


def _chunk_fn(run: _Run) -> Any:
    """The jitted ``n`` optimiser steps, each drawing its batch from ``fold_in(key, step)``;
    returns the new state, the per-step metrics and whether the params are finite."""
    config, task, mesh = run.config, run.task, run.mesh
    step_fn = make_train_step(run.optimizer, jit=False, **_model_options(config))

    @partial(jax.jit, static_argnames="n")
    def run_chunk(state: TrainState, n: int):
        def body(s, _):
            batch = task.sample(jax.random.fold_in(s.key, s.step), config.batch, config.seq_len)
            if mesh is not None:  # each device draws and trains on its slice of the batch
                batch = jax.lax.with_sharding_constraint(batch, batch_sharding(mesh))
            params, opt_state, metrics = step_fn(s.params, s.opt_state, batch)
            return TrainState(params, opt_state, s.step + 1, s.key), metrics

        state, metrics = jax.lax.scan(body, state, length=n)
        leaves = jax.tree.leaves(state.params)
        return state, metrics, jnp.all(jnp.stack([jnp.all(jnp.isfinite(a)) for a in leaves]))

    return run_chunk


def _model_options(config: RunConfig) -> dict[str, Any]:
    task = get_task(config.task)
    return {
        "loss": task.loss,
        "activation": config.activation,
        "return_sequences": task.return_sequences,
        "impl": config.impl,
    }


def _test_row(run: _Run, test_set: Any, step: int) -> dict[str, Any]:
    metrics = evaluate(run.state.params, test_set, **_model_options(run.config))
    return {"step": step, "split": "test", **{k: float(v) for k, v in metrics.items()}}


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
        previous = signal.signal(signal.SIGINT, on_sigint)
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

    def __init__(self, run: _Run, start: int, enabled: bool) -> None:
        self.run, self.stream, self.bar, self.lines = run, sys.stderr, None, False
        if enabled and self.stream.isatty():
            from tqdm.auto import tqdm

            self.bar = tqdm(total=run.config.steps, initial=start, unit="step",
                            dynamic_ncols=True, file=self.stream)  # fmt: skip
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


def _shown(run: _Run, metrics: Mapping[str, Any]) -> str:
    """``loss 0.1, accuracy 0.93 (blank baseline 0.917)``: the metrics beside the baseline
    accuracy, where the task has one."""
    text = f"loss {metrics['loss']:.4g}"
    if "accuracy" in metrics:
        text += f", accuracy {metrics['accuracy']:.4g}"
        if run.task.baseline_accuracy is not None:
            text += f" (baseline {run.task.baseline_accuracy(run.config.seq_len):.4g})"
    return text


def _title(run: _Run) -> str:
    c = run.config
    return (
        f"{c.task} T={c.seq_len}: {c.activation} RNN {c.layers}x{c.hidden}, {c.recurrent_init} "
        f"recurrent init; {c.optimizer} {c.schedule} lr={c.lr:g}"
        + (f" warm-up {c.warmup}" if c.warmup else "")
        + f" clip={c.clip:g}, batch {c.batch}, {int(run.state.step)}/{c.steps} steps"
    )


def _train_loop(run: _Run, progress: bool) -> int:
    """The chunked loop; returns the exit code (0, 1 non-finite, 130 interrupted)."""
    config = run.config
    run_chunk = _chunk_fn(run)
    test_set = run.task.test_set(config.seq_len, config.eval_size)
    start = int(run.state.step)
    run.say(
        f"jrnn train: {_title(run)}; out {run.run_dir}"
        + (f" (resumed at step {start})" if run.resumed else "")
    )
    display = _Progress(run, start, progress and run.primary)
    code, t_start, stop = 0, time.perf_counter(), False
    with _ctrl_c() as ctrl_c:
        try:
            if start == 0 and not run.resumed:
                run.log(_test_row(run, test_set, 0))
            every = (config.log_every, config.eval_every, config.checkpoint_every)
            for end in _boundaries(start, config.steps, *every):
                # the processes of a job stop together: a Ctrl-C seen by any of them
                stop = any(gather_json(ctrl_c.pressed))
                if stop:
                    break
                code = _chunk(run, run_chunk, end, test_set, display, t_start)
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
    run: _Run, run_chunk: Any, end: int, test_set: Any, display: _Progress, t_start: float
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
        tested = _test_row(run, test_set, end)
        if not all(np.isfinite(v) for k, v in tested.items() if k not in ("step", "split")):
            _stop_non_finite(run, f"the test loss became non-finite at step {end}")
            return 1
        run.log(tested)
        if run.primary:
            _try_plot(run)
    if checkpoint:
        save(run.manager, run.state, run.run_dir)
    return 0


def _stop_non_finite(run: _Run, what: str) -> None:
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


def _report(run: _Run) -> None:
    """result.json and the summary line of a finished run."""
    task, step = run.task, int(run.state.step)
    final = next((r for r in reversed(run.rows) if r["split"] == "test"), None)
    if final is None or final["step"] != step:  # e.g. resumed at the last step: test it now
        test_set = task.test_set(run.config.seq_len, run.config.eval_size)
        final = _test_row(run, test_set, step)
        run.log(final)
        if run.primary:
            _try_plot(run, final=True)
    baseline = {"loss": task.baseline(run.config.seq_len), "predicts": task.baseline_name}
    if task.baseline_accuracy is not None:
        baseline["accuracy"] = task.baseline_accuracy(run.config.seq_len)
    test = {k: v for k, v in final.items() if k not in ("step", "split")}
    result = {"step": step, "test": test, "baseline": baseline, "seconds": _seconds(run)}
    if run.primary:
        write_json(run.run_dir / "result.json", result)
    shown = ", ".join(f"{k} {v:.4g}" for k, v in baseline.items() if k != "predicts")
    run.say(
        f"jrnn train: done, step {step}: test {_shown(run, test)}; baseline {shown} "
        f"({task.baseline_name}); {run.run_dir}"
    )


def _seconds(run: _Run) -> float:
    train_rows = [r for r in run.rows if r["split"] == "train" and "seconds" in r]
    return train_rows[-1]["seconds"] if train_rows else 0.0


# -------------------------------------------------------------------------------- plot


def figure(rows: list[dict[str, Any]], config: RunConfig, step: int) -> Any:
    """The run's curves as a matplotlib Figure: the loss (named: MSE or cross-entropy) with
    the memoryless baseline, the accuracy with the baseline's (classification tasks), the
    learning rate and the gradient norm; the title names the model, schedule and steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    task = get_task(config.task)
    train_rows = [r for r in rows if r["split"] == "train"]
    test_rows = [r for r in rows if r["split"] == "test"]
    panels = ["loss", "accuracy", "lr", "grad_norm"]
    if task.loss != "cross_entropy":
        panels.remove("accuracy")
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.8))
    labels = {
        "loss": "MSE" if task.loss == "mse" else "cross-entropy",
        "accuracy": "accuracy",
        "lr": "learning rate",
        "grad_norm": "gradient norm (before clipping)",
    }
    baselines = {"loss": task.baseline(config.seq_len)}
    if task.baseline_accuracy is not None:
        baselines["accuracy"] = task.baseline_accuracy(config.seq_len)
    for ax, key in zip(axes, panels, strict=True):
        for split, data, style in (("train", train_rows, "-"), ("test", test_rows, "o-")):
            pts = [(r["step"], r[key]) for r in data if key in r]
            if pts:
                ax.plot(*zip(*pts, strict=True), style, label=split, ms=3, lw=1)
        if key in baselines:
            ax.axhline(baselines[key], color="gray", ls="--", lw=1,
                       label=f"baseline ({task.baseline_name})")  # fmt: skip
        if key in ("loss", "grad_norm"):
            ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel(labels[key])
        ax.grid(alpha=0.3, which="both")
        if key in ("loss", "accuracy"):
            ax.legend(fontsize=8)
    c = config
    fig.suptitle(
        f"{c.task} T={c.seq_len}: {c.activation} RNN {c.layers}x{c.hidden}, "
        f"{c.recurrent_init} recurrent init; {c.optimizer}, {c.schedule} schedule, lr={c.lr:g}"
        + (f", warm-up {c.warmup}" if c.warmup else "")
        + f", clip={c.clip:g}, batch {c.batch}; step {step} of {c.steps}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


PLOT_EVERY_S = 30.0
"""During training, metrics.png is redrawn at a test row at most this often (a drawing
takes about a second, the whole of a short run's chunk); at the end, always."""


def _try_plot(run: _Run, *, final: bool = False) -> None:
    """Redraws metrics.png if rows came since the last drawing, and (unless ``final``) at
    least :data:`PLOT_EVERY_S` seconds passed since it."""
    if len(run.rows) == run.plotted_rows:
        return
    if not final and time.monotonic() - run.plotted_at < PLOT_EVERY_S:
        return
    try:
        import matplotlib.pyplot as plt

        fig = figure(run.rows, run.config, int(run.state.step))
        fig.savefig(run.run_dir / "metrics.png", dpi=110)
        plt.close(fig)
    except Exception as err:  # a plot must never end or mask a training run
        print(f"jrnn train: warning: could not draw metrics.png: {err}", file=sys.stderr)
    run.plotted_rows, run.plotted_at = len(run.rows), time.monotonic()
