"""The ``jrnn`` command: ``jrnn train`` (train a model on a task or on your own sequences,
``--data``), ``jrnn eval`` and ``jrnn predict`` (a trained run on its test set or your
file), ``jrnn launch`` (a multi-process ``jrnn train`` job on this machine,
:mod:`jrnn.cli.launch`), ``jrnn check`` (the seed notebook's example and the gradient checks) and
``jrnn bench``. ``jrnn`` alone prints the usage.

The package by job: :mod:`jrnn.cli.parse` (the parser, built without jax),
:mod:`jrnn.cli.rundir` (the run directory's life), :mod:`jrnn.cli.runs` (run folders, their
lock, the optimiser of a run, :func:`~jrnn.cli.runs.load_run`), :mod:`jrnn.cli.checkpoint`
(orbax checkpoints and the JSON files), :mod:`jrnn.cli.loop` (the training loop),
:mod:`jrnn.cli.plot` (the curves), :mod:`jrnn.cli.infer` (eval and predict),
:mod:`jrnn.cli.launch`, :mod:`jrnn.cli.check` with :mod:`jrnn.cli.notebook` (the seed
notebook's example) and :mod:`jrnn.cli.bench`. The library never imports any of it.

``jrnn train`` writes a run directory (``--out``, see :mod:`jrnn.cli.runs`):

* ``config.json``: every option of the run (:class:`~jrnn.run_config.RunConfig`) and the
  history of its resumes;
* ``metrics.jsonl``: one JSON object per line, ``{"step", "split": "train"|"val"|"test",
  "loss", ...}``; train rows average the steps since the previous row; ``val`` rows are a
  ``--data`` run's evaluations during training (its test split is evaluated at the end);
* ``metrics.png``: loss, accuracy, learning rate, gradient norm and steps per second in two
  rows of panels, redrawn at evaluations;
* ``checkpoints/``: orbax checkpoints of params, optimiser state, step and PRNG key, every
  ``--checkpoint-every`` steps, at the end, and on Ctrl-C;
* ``result.json``: the final test metrics and the baseline, when the run finishes.

The training loop runs ``--log-every`` steps per jitted call (data drawn on the device from
``fold_in(key, step)``), so a resumed run repeats an uninterrupted one bit for bit.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import importlib.util
import sys
from typing import Any

from jrnn._src.extras import EXTRAS, MissingExtraError, install_command
from jrnn._src.interrupts import NOT_STARTED
from jrnn.cli.parse import parser

__all__ = ["PLOT_EVERY_S", "TrainError", "check", "figure", "join_job", "main", "parser", "train"]

# what needs jax, imported when first used: the parser and ``jrnn --help`` need none of it
_LAZY = {
    "check": "jrnn.cli.check",
    "train": "jrnn.cli.loop",
    "figure": "jrnn.cli.plot",
    "PLOT_EVERY_S": "jrnn.cli.plot",
    "TrainError": "jrnn.cli.rundir",
}


# reachable as attributes (jrnn.cli.rundir) without an import of their own first
_SUBMODULES = (
    "bench",
    "check",
    "checkpoint",
    "infer",
    "launch",
    "loop",
    "notebook",
    "parse",
    "plot",
    "rundir",
    "runs",
)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    if name in _SUBMODULES:
        return importlib.import_module(f"jrnn.cli.{name}")
    raise AttributeError(f"module 'jrnn.cli' has no attribute {name!r}")


def missing_train_extra(command: str) -> str | None:
    """The one-line error for ``command`` when the ``train`` extra's packages are not all
    installed, else ``None``."""
    missing = [m for m, extra in EXTRAS.items() if extra == "train" and not _installed(m)]
    if not missing:
        return None
    return (
        f"{command} needs {', '.join(missing)}, which "
        f"{'is' if len(missing) == 1 else 'are'} not installed: {install_command('train')}"
    )


def _installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a finder that refuses it
        return False
    except ValueError:  # a module without a spec (set up by hand): it is there
        return True


def main(argv: list[str] | None = None, *, program: bool = False) -> int:
    """The ``jrnn`` entry point; returns the exit code. ``jrnn`` alone prints the usage.
    ``program``: the process is the ``jrnn`` program's own (:mod:`jrnn.__main__`), whose
    logging it may configure."""
    argv = sys.argv[1:] if argv is None else list(argv)
    p = parser()
    if not argv:
        p.print_help()
        return 0
    commands = _commands(p)
    if argv[0].startswith("-") and argv[0] not in ("-h", "--help", "--version"):
        p.error(f"the command comes first: jrnn {{{','.join(commands)}}} {' '.join(argv)}")
    elif not argv[0].startswith("-") and argv[0] not in commands:
        close = difflib.get_close_matches(argv[0], commands, n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]}?)" if close else ""
        p.error(f"unknown command {argv[0]!r}{hint}; the commands: {', '.join(commands)}")
    rest: list[str] = []
    if argv[0] == "launch" and "--" in argv:  # jrnn launch ... -- <train options>
        argv, rest = argv[: argv.index("--")], argv[argv.index("--") + 1 :]
    args = p.parse_args(argv)
    if args.command == "check":
        from jrnn.cli.check import check

        return check(args.batch, args.steps, args.features, args.hidden, args.seed)
    if args.command == "bench":
        from jrnn.cli.bench import bench

        return bench(args, argv[1:])
    missing = missing_train_extra(f"jrnn {args.command}")
    if missing is not None:
        print(f"jrnn {args.command}: error: {missing}", file=sys.stderr)
        return 2
    if args.command in ("eval", "predict"):
        from jrnn.cli.infer import run_command

        return run_command(args)
    if args.command == "launch":
        from jrnn.cli.launch import launch

        try:
            return launch(rest, args.processes, args.devices_per_process, verbose=args.verbose)
        except ValueError as err:
            print(f"jrnn launch: error: {err}", file=sys.stderr)
            return 2
    if program:  # orbax's abandoned writer tasks may be collected as late as at the exit
        from jrnn.cli.checkpoint import drop_abandoned_writes_for_the_process

        drop_abandoned_writes_for_the_process()
    return _train(args)


def _commands(p: argparse.ArgumentParser) -> list[str]:
    """The subcommands of the ``jrnn`` parser ``p``, in their order."""
    sub = next(a for a in p._actions if isinstance(a, argparse._SubParsersAction))
    return list(sub.choices)


def _train(args: Any) -> int:
    """``jrnn train`` from its parsed arguments; the exit code."""
    from jrnn.cli.checkpoint import CheckpointError, abandoned_writes_dropped
    from jrnn.cli.loop import train
    from jrnn.cli.rundir import TrainError
    from jrnn.cli.runs import RunDirError

    job = ("coordinator", "num_processes", "process_id", "heartbeat_timeout")
    given = {
        k: v
        for k, v in vars(args).items()
        if k not in ("command", "out", "resume", "progress", *job)
    }
    try:
        join_job(*(getattr(args, k) for k in job))
        with abandoned_writes_dropped():
            return train(given, args.out, resume=args.resume, progress=args.progress)
    except (TrainError, CheckpointError, RunDirError, MissingExtraError) as err:
        print(f"jrnn train: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the loop (a library call): nothing to save
        print(f"\n{NOT_STARTED}", file=sys.stderr)
        return 130


def join_job(
    coordinator: str | None, num_processes: int | None, process_id: int | None, heartbeat: int
) -> None:
    """Joins a multi-process job (:func:`jrnn.distributed.initialize`) when told to, or when
    JAX detects a cluster job of several processes; else does nothing."""
    from jrnn.cli.rundir import TrainError
    from jrnn.distributed import cluster_processes, initialize

    given = {
        "--coordinator": coordinator,
        "--num-processes": num_processes,
        "--process-id": process_id,
    }
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
