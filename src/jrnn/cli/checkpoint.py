"""Training checkpoints with orbax-checkpoint: params, optimiser state, step and PRNG key.

A run directory holds ``config.json`` (the options that define the run), ``checkpoints/``
(orbax steps, the newest few kept) and the logs. Restoring checks the config first and
the arrays' structure, shapes and dtypes against a template second, and turns every
failure into a :class:`CheckpointError` that says what is wrong; nothing here deletes or
rewrites a checkpoint that could not be read.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from jrnn._src.extras import missing_extra

__all__ = [
    "CheckpointError",
    "TrainState",
    "abandoned_writes_dropped",
    "close",
    "drop_abandoned_writes_for_the_process",
    "latest_step",
    "open_manager",
    "read_config",
    "remove_unfinished",
    "restore",
    "save",
    "write_config",
    "write_json",
]

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"
TMP_SUFFIX = ".orbax-checkpoint-tmp"


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: missing, corrupt or from an incompatible run."""


class TrainState(NamedTuple):
    """Everything a resumed run needs to continue bit for bit.

    Attributes:
        params: the model params (:class:`~jrnn.model.ModelParams`).
        opt_state: ``optimizer.init(params)`` advanced ``step`` times.
        step: `()` int32, optimiser steps taken.
        key: the run's PRNG key; step ``s`` draws its batch from ``fold_in(key, s)``.
    """

    params: Any
    opt_state: Any
    step: jax.Array
    key: jax.Array


def _orbax() -> Any:
    """``orbax.checkpoint``, or the one-line error naming the extra that installs it."""
    try:
        import orbax.checkpoint as ocp
    except ModuleNotFoundError as err:
        raise missing_extra(err, "jrnn's checkpoints (jrnn train, jrnn.load_run)") from None
    return ocp


def _checkpoint_dir(run_dir: Path) -> Path:
    return Path(run_dir).absolute() / CHECKPOINT_DIR


def latest_step(run_dir: str | Path) -> int | None:
    """The newest committed checkpoint step under ``run_dir``, or ``None``.

    Looks at the directory only (orbax names each committed step's folder by its number
    and writes unfinished ones under temporary names).
    """
    ckpt = _checkpoint_dir(Path(run_dir))
    if not ckpt.is_dir():
        return None
    steps = [int(p.name) for p in ckpt.iterdir() if p.is_dir() and p.name.isdigit()]
    return max(steps) if steps else None


def open_manager(run_dir: str | Path, keep: int = 3, *, create: bool = True):
    """An ``orbax.checkpoint.CheckpointManager`` for ``run_dir/checkpoints``."""
    ocp = _orbax()

    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=create)
    with quiet_orbax():  # it reads the existing checkpoints' metadata, and logs what fails
        return ocp.CheckpointManager(_checkpoint_dir(Path(run_dir)), options=options)


def remove_unfinished(run_dir: str | Path) -> None:
    """Removes what writes that never finished left in ``run_dir``: the temporary folders of
    checkpoints (orbax leaves them when a write fails, e.g. on a full disk, or the process
    is killed) and :func:`write_json`'s temporary files; committed steps are never
    touched."""
    run_dir = Path(run_dir)
    ckpt = _checkpoint_dir(run_dir)
    for p in ckpt.glob(f"*{TMP_SUFFIX}*") if ckpt.is_dir() else ():
        shutil.rmtree(p, ignore_errors=True)
    for p in run_dir.glob(".*.tmp") if run_dir.is_dir() else ():
        p.unlink(missing_ok=True)


def save(manager, state: TrainState, run_dir: str | Path) -> int:
    """Saves ``state`` at its step (no-op if that step is saved already); waits for it.

    Raises:
        CheckpointError: the checkpoint could not be written (a full disk, a read-only
            folder); its unfinished folder is removed and the previous checkpoints are
            left as they are.
    """
    ocp = _orbax()

    step = int(state.step)
    if step in manager.all_steps():
        return step
    try:
        with quiet_orbax(settle_on_error=True):
            manager.save(step, args=ocp.args.StandardSave(state._asdict()), force=True)
            manager.wait_until_finished()
    except Exception as err:  # orbax and tensorstore raise many types around an OSError
        if jax.process_index() == 0:  # the shared folder is process 0's to tidy
            remove_unfinished(run_dir)
        last = latest_step(run_dir)
        kept = f"the last good one (step {last}) is kept" if last is not None else "none kept"
        raise CheckpointError(
            f"cannot write the checkpoint of step {step} in {_checkpoint_dir(Path(run_dir))} "
            f"({_reason(err)}); {kept}"
        ) from err
    return step


class _AbandonedOrbaxTasks(logging.Filter):
    """Drops asyncio's "Task exception was never retrieved" for orbax's writer tasks."""

    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage()
        return not ("never retrieved" in text and "orbax" in text)


@contextlib.contextmanager
def abandoned_writes_dropped() -> Iterator[None]:
    """While entered, asyncio's log of orbax's abandoned writer tasks is dropped.

    After a failed save, orbax's unfinished writer tasks are garbage-collected whenever the
    collector runs, later than :func:`quiet_orbax` can wait for, and asyncio logs each one
    with its traceback; the failure was already reported in one line (``jrnn train`` runs
    inside this). On exit the collector runs once more, under the filter, which is then
    removed: the asyncio logger is as it was.
    """
    logger, dropped = logging.getLogger("asyncio"), _AbandonedOrbaxTasks()
    logger.addFilter(dropped)
    try:
        yield
    finally:
        gc.collect()
        _retrieve_abandoned_orbax_errors()  # those still held: no log when they go, later
        logger.removeFilter(dropped)


def drop_abandoned_writes_for_the_process() -> None:
    """asyncio's log of orbax's abandoned writer tasks dropped for the rest of the process:
    for a program's entry point only (``jrnn``'s, whose process it is), since a task may be
    collected as late as the interpreter's exit; library calls use
    :func:`abandoned_writes_dropped`, which restores the logger."""
    logger = logging.getLogger("asyncio")
    if not any(isinstance(f, _AbandonedOrbaxTasks) for f in logger.filters):
        logger.addFilter(_AbandonedOrbaxTasks())


def _retrieve_abandoned_orbax_errors() -> None:
    """Marks the errors of orbax's finished writer tasks as retrieved (asyncio logs a task's
    unretrieved error when the task is collected, which may be at the interpreter's exit)."""
    for obj in gc.get_objects():
        # type(), not isinstance(): that would read __class__ of every object, lazy modules'
        # proxies included (torch warns when one of its is touched)
        if type(obj) is not asyncio.Task or not obj.done() or obj.cancelled():
            continue
        code = getattr(obj.get_coro(), "cr_code", None)
        if "orbax" in getattr(code, "co_filename", ""):
            obj.exception()


def _reason(err: BaseException) -> str:
    """The OS error under ``err`` (orbax and tensorstore wrap it), else its first line."""
    seen: BaseException | None = err
    while seen is not None:
        if isinstance(seen, OSError) and seen.strerror:
            return seen.strerror
        code = re.search(r"os_error_code='?(\d+)", str(seen))
        if code:  # tensorstore's errors carry the errno in their text
            return os.strerror(int(code.group(1)))
        seen = seen.__cause__ or seen.__context__
    text = str(err).strip().splitlines()
    return f"{type(err).__name__}: {text[0][:200] if text else ''}"


@contextlib.contextmanager
def quiet_orbax(*, settle_on_error: bool = False) -> Iterator[None]:
    """Keeps orbax's own error logs (tracebacks of its writer threads, through absl) off
    stderr while a save or restore runs: a failure reaches the caller as one exception,
    which this module turns into a one-line :class:`CheckpointError`.

    With ``settle_on_error``, a failure waits (up to 5 s) until the writes still in flight
    have stopped printing, so their late tracebacks are caught too."""
    logger = logging.getLogger("absl")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    if jax.process_count() > 1:
        # in a multi-process job, descriptor 2 must stay the terminal's: JAX's fatal "another
        # task died" line, if a peer dies during a save, is the only word the user gets
        try:
            yield
        finally:
            logger.setLevel(level)
        return
    sys.stderr.flush()
    saved_fd = os.dup(2)
    with tempfile.TemporaryFile("w+b") as captured:
        os.dup2(captured.fileno(), 2)  # tensorstore's threads print to the descriptor itself
        try:
            yield
        except BaseException:
            if settle_on_error:
                _settle(captured)
            raise
        finally:
            sys.stderr.flush()
            os.dup2(saved_fd, 2)
            os.close(saved_fd)
            logger.setLevel(level)
            captured.seek(0)
            sys.stderr.write(_drop_loop_noise(captured.read().decode(errors="replace")))
            sys.stderr.flush()


def _settle(captured: Any, quiet_s: float = 0.5, limit_s: float = 5.0) -> None:
    """Waits until nothing was written to ``captured`` for ``quiet_s`` (at most ``limit_s``)."""
    size, quiet_since, deadline = -1, time.monotonic(), time.monotonic() + limit_s
    while time.monotonic() < deadline:
        now = os.fstat(captured.fileno()).st_size
        if now != size:
            size, quiet_since = now, time.monotonic()
        elif time.monotonic() - quiet_since >= quiet_s:
            return
        time.sleep(0.05)


def _drop_loop_noise(text: str) -> str:
    """``text`` without the "Event loop is closed" tracebacks that tensorstore's callbacks
    print when a failed save or restore has closed orbax's event loop under them, nor a
    traceback cut off before its exception line (the capture file itself was cut short: a
    full disk, a file-size limit), which says nothing."""
    blocks = re.split(r"(?m)^(?=Traceback \(most recent call last\):$)", text)
    return "".join(b for b in blocks if not _noise(b))


def _noise(block: str) -> bool:
    if not block.startswith("Traceback (most recent call last):"):
        return False
    if "RuntimeError: Event loop is closed" in block:
        return True
    # a whole traceback ends in its exception's line, the first not indented
    return not any(line and not line[0].isspace() for line in block.splitlines()[1:])


def close(manager) -> None:
    """Waits for ``manager``'s pending saves and closes it (orbax's noise kept off stderr)."""
    with quiet_orbax():
        manager.wait_until_finished()
        manager.close()


def restore(
    manager,
    template: TrainState,
    run_dir: str | Path,
    *,
    advice: str = " (move it away or pass another --out)",
) -> TrainState:
    """Restores the newest checkpoint into the structure, shapes and dtypes of ``template``;
    ``advice`` ends the message of one that cannot be read.

    Raises:
        CheckpointError: no checkpoint, an unreadable one, or arrays that do not match.
    """
    ocp = _orbax()

    step = latest_step(run_dir)
    if step is None:
        raise CheckpointError(f"no checkpoint to resume from in {_checkpoint_dir(Path(run_dir))}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template._asdict())
    where = _checkpoint_dir(Path(run_dir)) / str(step)
    try:
        with quiet_orbax(settle_on_error=True):
            restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as err:  # orbax raises many types (ValueError, OSError, tensorstore's)
        raise CheckpointError(
            f"cannot restore checkpoint {where}: {type(err).__name__}: {err}. It is corrupt or "
            f"was written by an incompatible run; it was left as it is{advice}"
        ) from err
    state = TrainState(**restored)
    for (path, got), want in zip(
        jax.tree_util.tree_leaves_with_path(state), jax.tree.leaves(template), strict=True
    ):
        if jnp.shape(got) != jnp.shape(want) or jnp.result_type(got) != jnp.result_type(want):
            raise CheckpointError(
                f"checkpoint {where} does not match this run at {jax.tree_util.keystr(path)}: "
                f"{jnp.result_type(got)}{list(jnp.shape(got))} in the checkpoint, "
                f"{jnp.result_type(want)}{list(jnp.shape(want))} expected"
            )
    if int(state.step) != step:
        raise CheckpointError(f"checkpoint {where} holds step {int(state.step)}, not {step}")
    return state


def read_config(run_dir: str | Path, *, advice: str = " (pass another --out)") -> dict[str, Any]:
    """The run's ``config.json`` as a dict; ``advice`` ends the message of a missing one.

    Raises:
        CheckpointError: the file is missing, unreadable or not a JSON object.
    """
    path = Path(run_dir) / CONFIG_FILE
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} is missing: {run_dir} holds checkpoints of an unknown run; "
            f"it was left as it is{advice}"
        ) from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {err}; it was left as it is") from err
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} does not hold a run config; it was left as it is")
    return saved


def write_json(path: str | Path, value: Any) -> None:
    """Writes ``value`` as JSON (sorted keys, for diffs) atomically: a failed write (a full
    disk) leaves the previous file whole."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        tmp.write_text(json.dumps(value, indent=2, sort_keys=True) + "\n")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_config(run_dir: str | Path, config: dict[str, Any]) -> None:
    """Writes ``config.json`` atomically."""
    write_json(Path(run_dir) / CONFIG_FILE, config)
