"""Training checkpoints with orbax-checkpoint: params, optimiser state, step and PRNG key.

A run directory holds ``config.json`` (the options that define the run), ``checkpoints/``
(orbax steps, the newest few kept) and the logs. Restoring checks the config first and
the arrays' structure, shapes and dtypes against a template second, and turns every
failure into a :class:`CheckpointError` that says what is wrong; nothing here deletes or
rewrites a checkpoint that could not be read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "CheckpointError",
    "TrainState",
    "check_config",
    "latest_step",
    "open_manager",
    "restore",
    "save",
]

CONFIG_FILE = "config.json"
CHECKPOINT_DIR = "checkpoints"


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


def open_manager(run_dir: str | Path, keep: int = 3):
    """An ``orbax.checkpoint.CheckpointManager`` for ``run_dir/checkpoints``."""
    import orbax.checkpoint as ocp

    options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True)
    return ocp.CheckpointManager(_checkpoint_dir(Path(run_dir)), options=options)


def save(manager, state: TrainState) -> int:
    """Saves ``state`` at its step (no-op if that step is saved already); waits for it."""
    import orbax.checkpoint as ocp

    step = int(state.step)
    if step not in manager.all_steps():
        manager.save(step, args=ocp.args.StandardSave(state._asdict()), force=True)
        manager.wait_until_finished()
    return step


def restore(manager, template: TrainState, run_dir: str | Path) -> TrainState:
    """Restores the newest checkpoint into the structure, shapes and dtypes of ``template``.

    Raises:
        CheckpointError: no checkpoint, an unreadable one, or arrays that do not match.
    """
    import orbax.checkpoint as ocp

    step = latest_step(run_dir)
    if step is None:
        raise CheckpointError(f"no checkpoint to resume from in {_checkpoint_dir(Path(run_dir))}")
    abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, template._asdict())
    where = _checkpoint_dir(Path(run_dir)) / str(step)
    try:
        restored = manager.restore(step, args=ocp.args.StandardRestore(abstract))
    except Exception as err:  # orbax raises many types (ValueError, OSError, tensorstore's)
        raise CheckpointError(
            f"cannot restore checkpoint {where}: {type(err).__name__}: {err}. It is corrupt or "
            "was written by an incompatible run; it was left as it is (move it away or pass "
            "another --out)"
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


def check_config(
    run_dir: str | Path, config: dict[str, Any], structural: tuple[str, ...]
) -> list[str]:
    """Compares ``config`` with the run's ``config.json``.

    Args:
        run_dir: the run directory.
        config: the options of the run about to resume it.
        structural: keys that must match (they define the model, the optimiser state's
            structure or the task).

    Returns:
        One line per other option that differs (the caller warns: the resumed run then
        does not repeat an uninterrupted one).

    Raises:
        CheckpointError: the file is missing or unreadable, or a structural option differs.
    """
    path = Path(run_dir) / CONFIG_FILE
    try:
        saved = json.loads(path.read_text())
    except FileNotFoundError:
        raise CheckpointError(
            f"{path} is missing: {run_dir} holds checkpoints of an unknown run; "
            "it was left as it is (pass another --out)"
        ) from None
    except (OSError, ValueError) as err:
        raise CheckpointError(f"cannot read {path}: {err}; it was left as it is") from err
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path} does not hold a run config; it was left as it is")

    def differs(k: str) -> bool:
        return saved.get(k, "<missing>") != config.get(k, "<missing>")

    def line(k: str) -> str:
        return f"{k}: {saved.get(k, '<missing>')!r} in the checkpointed run, {config.get(k)!r} now"

    hard = [line(k) for k in structural if differs(k)]
    if hard:
        raise CheckpointError(
            f"{run_dir} holds an incompatible run (its checkpoint was left as it is); "
            "differing options:\n  " + "\n  ".join(hard)
        )
    keys = sorted((set(saved) | set(config)) - {"resumes"})  # resumes: the run's history
    return [line(k) for k in keys if k not in structural and differs(k)]


def write_config(run_dir: str | Path, config: dict[str, Any]) -> None:
    """Writes ``config.json`` (sorted keys, for diffs)."""
    Path(run_dir).mkdir(parents=True, exist_ok=True)
    (Path(run_dir) / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
