"""``jrnn bench``: the benchmark of :mod:`jrnn.bench` on the command line: a progress bar,
a table at the end, and on request JSON lines, a Markdown report, the plots and a tuning
table for ``impl="auto"``."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from jrnn._src.extras import missing_extra
from jrnn.bench.presets import IMPLS, PRESETS

__all__ = ["add_bench", "bench"]

DTYPES = ("float32", "bfloat16")


def _shape(text: str) -> tuple[int, int, int, int]:
    try:
        values = tuple(int(v) for v in text.split(","))
    except ValueError:
        values = ()
    if len(values) != 4 or min(values) <= 0:
        raise argparse.ArgumentTypeError(f"expected B,T,F,H, four positive ints; got {text!r}")
    return values


def add_bench(sub: Any) -> None:
    presets = "; ".join(f"{name}: {p.about}" for name, p in PRESETS.items())
    p = sub.add_parser(
        "bench",
        help="time jrnn against flax, haiku, Keras, PyTorch on this device",
        description="Time the forward pass and the train step (value and grad), their "
        "compile time and XLA's temporary memory, of jrnn's implementations and the peers "
        "installed (pip install 'jrnn[bench]'), on the default device (CPU, GPU or TPU). "
        "Medians after warm-up with the interquartile range; what cannot run here is a row "
        f"saying why. Presets: {presets}. Keras is timed on its JAX backend: run with "
        "KERAS_BACKEND=jax.",
    )
    p.add_argument(
        "--preset",
        choices=sorted(PRESETS),
        default="quick",
        help="the shapes, dtypes, repeats and budget (default: quick)",
    )
    p.add_argument(
        "--shape",
        type=_shape,
        action="append",
        metavar="B,T,F,H",
        help="a shape instead of the preset's; repeat for several",
    )
    p.add_argument(
        "--dtype",
        choices=DTYPES,
        action="append",
        help="a dtype instead of the preset's; repeat for both",
    )
    p.add_argument(
        "--impl",
        choices=IMPLS,
        action="append",
        help="an implementation (default: the preset's); repeat for some",
    )
    p.add_argument("--repeats", type=int, help="timed calls per measurement (preset's)")
    p.add_argument("--warmup", type=int, help="warm-up calls (preset's)")
    p.add_argument(
        "--budget-s",
        type=float,
        metavar="SECONDS",
        help="stop timing a shape's group after this long (preset's)",
    )
    p.add_argument(
        "--time-limit-s",
        type=float,
        metavar="SECONDS",
        help="start no new shape after this long (preset's; full: 1800)",
    )
    p.add_argument(
        "--json",
        metavar="PATH",
        help="the rows as JSON lines, written as each shape is measured ('-': stdout, at the end)",
    )
    p.add_argument("--markdown", metavar="PATH", help="a Markdown report")
    p.add_argument("--plot", metavar="PATH", help="a PNG: train step time vs T and vs H")
    p.add_argument(
        "--tune",
        metavar="OUT.json",
        help="instead: time scan against pallas over shape buckets and write the "
        "dispatch table for impl='auto' (jrnn.bench.load_tuning)",
    )
    p.add_argument(
        "--interpret",
        action="store_true",
        help="time the Pallas kernels on a CPU too, in interpret mode (a dry run; "
        "default: a row saying why not)",
    )
    p.add_argument(
        "--no-progress",
        dest="progress",
        action="store_false",
        help="no progress (default: a bar on a terminal, else lines)",
    )


class _Progress:
    def __init__(self, enabled: bool) -> None:
        self.bar: Any = None
        self.enabled = enabled
        if enabled and sys.stderr.isatty():
            try:
                from tqdm.auto import tqdm
            except ModuleNotFoundError:
                return
            self.bar = tqdm(total=0, unit="shape", file=sys.stderr, dynamic_ncols=True)

    def __call__(self, done: int, total: int, what: str) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.n = done
            self.bar.set_postfix_str(what)
            self.bar.refresh()
        elif self.enabled and done < total:
            print(f"jrnn bench: {done + 1}/{total}: {what}", file=sys.stderr, flush=True)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _write(path: str, text: str) -> None:
    if path == "-":
        sys.stdout.write(text)
    else:
        Path(path).write_text(text)
        print(f"jrnn bench: wrote {path}", file=sys.stderr)


def bench(args: argparse.Namespace, argv: list[str]) -> int:
    """``jrnn bench`` from its parsed arguments; the exit code."""
    import jrnn.bench as jb  # jax: only to measure (the parser above is built without it)
    from jrnn.bench import report

    if args.plot:  # refused before the measuring, not after it
        try:
            import matplotlib  # noqa: F401
        except ModuleNotFoundError as err:
            why = missing_extra(err, "jrnn bench --plot", "bench")
            print(f"jrnn bench: error: {why}", file=sys.stderr)
            return 2
    progress = _Progress(args.progress)
    start = time.perf_counter()
    on_rows = None
    if args.json and args.json != "-":
        Path(args.json).write_text("")

        def on_rows(these: list[dict[str, Any]]) -> None:  # a killed run keeps what it had
            with Path(args.json).open("a") as f:
                f.write(report.json_lines(these))

    try:
        if args.tune:
            table, rows = jb.tune(
                args.shape,
                tuple(args.dtype or ("float32", "bfloat16")),
                repeats=args.repeats or 10,
                warmup=args.warmup or 2,
                interpret=args.interpret,
                progress=progress,
            )
            Path(args.tune).write_text(json.dumps(table.to_json(), indent=2, sort_keys=True))
        else:
            rows = jb.run(
                args.shape,
                args.dtype,
                args.impl,
                preset=args.preset,
                repeats=args.repeats,
                warmup=args.warmup,
                budget_s=args.budget_s,
                time_limit_s=args.time_limit_s,
                interpret=args.interpret,
                progress=progress,
                on_rows=on_rows,
            )
    finally:
        progress.close()
    if args.json != "-":
        print(report.table(rows))
    command = " ".join(["jrnn bench", *argv])
    if args.json == "-":
        _write(args.json, report.json_lines(rows))
    elif args.json:
        print(f"jrnn bench: wrote {args.json}", file=sys.stderr)
    if args.markdown:
        _write(args.markdown, report.markdown(rows, command, jb.now()))
    if args.plot:
        print(f"jrnn bench: wrote {report.plot(rows, args.plot)}", file=sys.stderr)
    if args.tune:
        chosen = dict(table.choices)
        pallas = sum(v == "pallas" for v in chosen.values())
        print(
            f"jrnn bench: wrote {args.tune}: {pallas} of {len(chosen)} buckets run the "
            f"kernels under impl='auto' with this table",
            file=sys.stderr,
        )
    print(f"jrnn bench: {len(rows)} rows in {jb.elapsed(start)}", file=sys.stderr)
    return 0
