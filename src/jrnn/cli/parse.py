"""The ``jrnn`` command line's parser: ``train`` (its options read from
:class:`~jrnn.run_config.RunConfig`'s fields), ``launch`` and ``check``."""

from __future__ import annotations

import argparse
import dataclasses
import difflib
from typing import Any, NoReturn

from jrnn._version import __version__
from jrnn.cli.bench import add_bench
from jrnn.run_config import RunConfig, field_type, option_help

__all__ = ["parser"]


class _Parser(argparse.ArgumentParser):
    """argparse with errors a person reads at a glance: one line and a hint (not the whole
    usage), and an unknown option reported by the command it was given to, with the
    option it most likely meant."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n  ({self.prog} --help lists the options)\n")

    def parse_known_args(self, args: Any = None, namespace: Any = None) -> Any:
        known, extra = super().parse_known_args(args, namespace)
        if extra and self.prog != "jrnn":  # a command's own parser: report them here
            self.error(f"unrecognized arguments: {' '.join(extra)}{self._did_you_mean(extra)}")
        return known, extra

    def _did_you_mean(self, extra: list[str]) -> str:
        flags = [f for action in self._actions for f in action.option_strings]
        for word in extra:
            if word.startswith("--"):
                close = difflib.get_close_matches(word.split("=")[0], flags, n=1, cutoff=0.6)
                if close:
                    return f" (did you mean {close[0]}?)"
        return ""


def _value_type(field: dataclasses.Field) -> Any:
    """An argparse ``type`` for a :class:`RunConfig` field: converts, then runs its check."""
    kind = field_type(field)
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


TRAIN_DESCRIPTION = (
    "Train an Elman RNN with a dense readout on a sequence task, or on your own sequences "
    "(--data FILE.npz), with optax and the hand-written BPTT, "
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
            p.add_argument(
                flag, action="store_true", default=argparse.SUPPRESS, help=option_help(field.name)
            )
            continue
        choices = field.metadata["choices"]
        p.add_argument(
            flag,
            type=None if choices else _value_type(field),  # argparse lists the choices
            choices=choices,
            default=argparse.SUPPRESS,  # only the options given reach the run's config
            metavar=None
            if choices
            else ("FILE.npz" if field.name == "data" else field.name.upper()),
            help=option_help(field.name),
        )
    p.add_argument("--out", help="run directory (default: runs/<task>-<date>-<time>)")
    p.add_argument(
        "--resume",
        action="store_true",
        help="continue the run in --out from its newest checkpoint, with its own "
        "options (default: off)",
    )
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress bar, or progress lines when stderr is not a terminal (default: shown)",
    )
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
    g.add_argument(
        "--heartbeat-timeout",
        type=_count(1),
        default=30,
        metavar="SECONDS",
        help="a process silent this long counts as dead, and the others stop (default: 30)",
    )


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
    p.add_argument(
        "--processes", type=_count(1), required=True, metavar="N", help="processes in the job"
    )
    p.add_argument(
        "--devices-per-process",
        type=_count(1),
        default=1,
        metavar="K",
        help="CPU devices of each process (on a machine with GPUs, GPUs i*K to "
        "i*K + K - 1 for process i) (default: 1)",
    )
    p.add_argument(
        "--verbose",
        action="store_true",
        help="also the runtime's chatter: Gloo's connection lines, XLA's info lines (default: off)",
    )


def _add_eval_predict(sub: Any) -> None:
    p = sub.add_parser(
        "eval",
        help="a trained run's metrics on its test set or on a file",
        description="The metrics (loss; accuracy for classes) of the newest checkpoint of a "
        "jrnn train run folder: on its test set (what result.json holds), or on all of an "
        ".npz of your own (the layout of jrnn train --data; see jrnn.data).",
    )
    p.add_argument("run", metavar="RUN", help="the run folder (jrnn train --out)")
    p.add_argument(
        "--data", metavar="FILE.npz", help="sequences to evaluate on (default: the run's test set)"
    )
    p.add_argument(
        "--json", action="store_true", help="one JSON object instead of a line (default: a line)"
    )
    p = sub.add_parser(
        "predict",
        help="a trained run's outputs on your inputs, as an .npy",
        description="The outputs of the newest checkpoint of a jrnn train run folder on "
        "your inputs: (N, O), or (N, T, O) for a run with an output per step (logits for "
        "classes), written as a numpy .npy.",
    )
    p.add_argument("run", metavar="RUN", help="the run folder (jrnn train --out)")
    p.add_argument(
        "--data",
        metavar="FILE",
        required=True,
        help="an .npz with inputs (N, T, F) and optionally lengths (N,), or an .npy of inputs",
    )
    p.add_argument("--out", metavar="PRED.npy", required=True, help="where to write them")


def _add_check(sub: Any) -> None:
    p = sub.add_parser(
        "check",
        help="the seed notebook's example and the gradient checks",
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
        p.add_argument(
            f"--{name}", type=positive, default=default, help=f"{what} (default: {default})"
        )
    seed = next(f for f in dataclasses.fields(RunConfig) if f.name == "seed")
    p.add_argument(
        "--seed",
        type=_value_type(seed),
        default=0,
        help="PRNG seed of the random model (default: 0)",
    )


def parser() -> argparse.ArgumentParser:
    """The ``jrnn`` parser, with its subcommands. Built without jax (the choices come from
    :mod:`jrnn._src.names` and :mod:`jrnn.bench.presets`): ``--help`` answers at once."""
    p = _Parser(
        prog="jrnn",
        description="The simple (Elman) RNN in JAX: train models, check the hand-written BPTT.",
    )

    p.add_argument("--version", action="version", version=f"jrnn {__version__}")
    sub = p.add_subparsers(dest="command", title="commands", required=True)
    _add_train(sub)
    _add_eval_predict(sub)
    _add_launch(sub)
    _add_check(sub)
    add_bench(sub)
    return p
