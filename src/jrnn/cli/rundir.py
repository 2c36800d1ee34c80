"""The run directory of ``jrnn train``: claimed, locked, checked, opened or resumed.

What it holds (``config.json``, ``metrics.jsonl``, ``metrics.png``, ``checkpoints/``,
``result.json``): :mod:`jrnn.cli`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import jax
import optax

from jrnn._version import __version__
from jrnn.cli.checkpoint import (
    CHECKPOINT_DIR,
    CONFIG_FILE,
    CheckpointError,
    TrainState,
    close,
    latest_step,
    open_manager,
    read_config,
    remove_unfinished,
    restore,
    write_config,
)
from jrnn.cli.runs import LOCK_FILE, create_default_run_dir, initial_state, lock_run_dir
from jrnn.data import sha256
from jrnn.distributed import batch_mesh, gather_json, make_sharded_train_step, replicate
from jrnn.run_config import STRUCTURAL, TRAJECTORY, RunConfig
from jrnn.tasks import Task, data_info, run_task
from jrnn.train import make_train_step

__all__ = [
    "ActiveRun",
    "TrainError",
    "agree",
    "check_data",
    "claim_run_dir",
    "make_config",
    "model_options",
    "open_run",
    "write_errors",
]


class TrainError(RuntimeError):
    """A run that cannot start or continue; the message says why."""


@dataclasses.dataclass
class ActiveRun:
    """A run being trained: the loop advances ``state`` and appends to ``rows``."""

    config: RunConfig
    run_dir: Path
    resumed: bool
    optimizer: optax.GradientTransformation
    state: TrainState
    manager: Any
    mesh: Any
    # the unjitted train step (data parallel over mesh, if any), called in the loop's jit
    step_fn: Any
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
        return run_task(self.config)

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


def agree(given: dict[str, Any], out: str | Path | None, resume: bool) -> None:
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


def claim_run_dir(
    config: RunConfig | None, out: str | Path | None, resume: bool
) -> tuple[Path, Any]:
    """The run directory, checked (:func:`_check_run_dir`) and locked
    (:func:`~jrnn.cli.runs.lock_run_dir`); returns it and the lock. In a multi-process job only
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
                    with write_errors(run_dir):
                        _check_run_dir(run_dir, resume)
            lock = lock_run_dir(run_dir)
            try:
                with write_errors(run_dir):
                    # again, now that no other run can change it
                    _check_run_dir(run_dir, resume, locked=True)
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


def check_data(config: RunConfig, saved: dict[str, Any] | None = None) -> str | None:
    """A ``--data`` run's file read, checked and split, or a TrainError saying why; returns
    its SHA-256 (``None`` for a task). ``saved``: the run folder's ``config.json``, whose
    ``data_sha256`` the file must still have (a resume, or ``jrnn eval`` of its test split,
    on a changed file would train or test on other sequences than the run's)."""
    if config.task != "data":
        return None
    try:
        run_task(config)
        digest = sha256(config.data)
    except (ValueError, OSError) as err:
        raise TrainError(f"--data {err}") from None
    known = (saved or {}).get("data_sha256")
    if known is not None and known != digest:
        raise TrainError(
            f"--data {config.data} has changed since the run started (SHA-256 {digest[:12]}..., "
            f"the run's {known[:12]}...): its split would hold other sequences; put the run's "
            "file back, or start a new run"
        )
    return digest


def make_config(make: Any) -> RunConfig:
    try:
        return make()
    except (TypeError, ValueError) as err:
        text = str(err)
        name = text.split(" ", 1)[0].rstrip(":")
        if name in {f.name for f in dataclasses.fields(RunConfig)}:
            text = "--" + name.replace("_", "-") + text[len(name) :]
        raise TrainError(text) from None


@contextlib.contextmanager
def write_errors(run_dir: Path) -> Iterator[None]:
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


# what jrnn train writes in a run folder: a folder holding only these and no checkpoint is
# a start that was interrupted (or killed) before its first checkpoint
RUN_FILES = frozenset({CONFIG_FILE, "metrics.jsonl", "metrics.png", CHECKPOINT_DIR, LOCK_FILE})


def _check_run_dir(run_dir: Path, resume: bool, *, locked: bool = False) -> None:
    """Never touch a folder that holds another run unless told to resume it. A run that
    never saved a checkpoint is no loss: ``--resume`` starts it at step 0 with its config,
    and a new run takes its place. Once ``locked``, what interrupted writes left (temporary
    checkpoints and files) is removed."""
    if run_dir.exists() and not run_dir.is_dir():
        raise TrainError(f"--out {run_dir} is a file, not a directory")
    if locked:
        remove_unfinished(run_dir)
    existing = latest_step(run_dir)
    if resume:
        if existing is None and not (run_dir / CONFIG_FILE).is_file():
            raise TrainError(
                f"--resume: {run_dir} holds no run to resume (no {CONFIG_FILE}); start one "
                "without --resume"
            )
        return
    if existing is not None:
        raise TrainError(
            f"--out {run_dir} already holds a run (checkpoint at step {existing}); pass "
            "--resume to continue it, or choose another --out (nothing was overwritten)"
        )
    held = {p.name for p in run_dir.iterdir()} - {LOCK_FILE} if run_dir.is_dir() else set()
    if held - RUN_FILES:
        shown = ", ".join(sorted(held - RUN_FILES)[:3])
        raise TrainError(
            f"--out {run_dir} exists and holds files that are not a jrnn run ({shown}); "
            "choose another --out"
        )
    if held and locked:  # a start interrupted before its first checkpoint: start it anew
        print(
            f"jrnn train: {run_dir} held a run stopped before its first checkpoint; "
            "starting it anew",
            file=sys.stderr,
        )
        for name in held:
            path = run_dir / name
            shutil.rmtree(path) if path.is_dir() else path.unlink()


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
    config = make_config(lambda: saved.replace(**given))
    changes = config.resume_changes(saved)
    line = lambda c: f"{c[0]}: {c[1]!r} in the checkpointed run, {c[2]!r} now"
    if changes[STRUCTURAL]:
        raise CheckpointError(
            f"{run_dir} holds an incompatible run (its checkpoint was left as it is); "
            "differing options:\n  " + "\n  ".join(map(line, changes[STRUCTURAL]))
        )
    step = latest_step(run_dir) or 0  # no checkpoint yet: the run starts again at step 0
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


def _check_saved_data(run_dir: Path) -> None:
    """A resumed ``--data`` run's file: the one it started with (:func:`check_data`)."""
    saved = read_config(run_dir)
    try:
        config = RunConfig.from_dict(saved)
    except (TypeError, ValueError):
        return  # _resume_config says what is wrong with it
    check_data(config, saved)


def open_run(
    run_dir: Path, config: RunConfig | None, given: dict[str, Any], resume: bool, stream: TextIO
) -> ActiveRun | None:
    """Set-up: the config (a resumed run's, checked), the state (restored on resume) and
    the run directory's config.json and metrics.jsonl."""
    resumes: list[Any] = []
    if resume:
        _check_saved_data(run_dir)  # before any warning about the options
        resumed = _resume_config(run_dir, given, stream)
        if resumed is None:
            return None
        config, resumes = resumed
    assert config is not None  # train() makes the config of a new run
    digest = check_data(config)  # the file's SHA-256 (a resume's: checked above)
    # a multi-process job is always data parallel, over every process's devices
    group = jax.process_count() > 1
    parallel = config.data_parallel or group
    devices = jax.devices() if group else jax.local_devices()
    what = "--data-parallel" if config.data_parallel else "a multi-process job"
    if parallel and config.batch % len(devices):
        raise TrainError(
            f"{what}: --batch {config.batch} is not a multiple of the "
            f"{len(devices)} {'devices of the job' if group else 'local devices'}"
        )
    optimizer, state = initial_state(config)
    mesh = batch_mesh(devices) if parallel else None
    if mesh is None:
        step_fn = make_train_step(optimizer, jit=False, **model_options(config))
    else:
        try:
            step_fn = make_sharded_train_step(optimizer, mesh, jit=False, **model_options(config))
        except ValueError as err:  # what data parallel training cannot take
            raise TrainError(f"{what}: {err}") from None
        state = replicate(state, mesh)  # checkpoints restore onto the same sharding
    manager = open_manager(run_dir, keep=config.keep)
    primary = jax.process_index() == 0
    run = ActiveRun(
        config, run_dir, resume, optimizer, state, manager, mesh, step_fn, [], stream, primary
    )
    if resume and latest_step(run_dir) is not None:
        try:
            run.state = restore(manager, state, run_dir)
        except CheckpointError:
            with contextlib.suppress(Exception):
                close(manager)
            raise
        if run.metrics_path.exists():  # drop rows logged after the checkpoint (a repeat follows)
            step = int(run.state.step)
            run.rows = [r for r in _read_rows(run.metrics_path) if r["step"] <= step]
    if primary:
        data = {} if digest is None else {"data_sha256": digest, "data_info": data_info(run.task)}
        write_config(run_dir, {**config.to_dict(), **data, "resumes": resumes})
        run.metrics_path.write_text("".join(json.dumps(r) + "\n" for r in run.rows))
    return run


def _read_rows(path: Path) -> list[dict[str, Any]]:
    """metrics.jsonl rows; a line cut short by a killed process is skipped."""
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except ValueError:
            continue
    return rows


def model_options(config: RunConfig) -> dict[str, Any]:
    """The model's options of a run, for its train step and its evaluation."""
    task = run_task(config)
    return {
        "loss": task.loss,
        "activation": config.activation,
        "return_sequences": task.return_sequences,
        "impl": config.impl,
    }
