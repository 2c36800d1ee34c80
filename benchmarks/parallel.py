"""Sequential scan vs parallel-in-time (DEER, quasi-DEER) forward and BPTT, timed side by side.

For each hidden size ``H`` and length ``T`` (batch ``B``, ``F = H`` inputs, a contractive
tanh RNN: orthogonal recurrent weights scaled by 0.8, inputs N(0, 1)) it times, jitted,
median of ``--repeats`` runs after warm-up, with ``block_until_ready``:

* forward: ``jrnn.forward`` (the sequential loop) vs ``jrnn.parallel.forward`` with
  ``method="newton"`` and ``"quasi"`` (iterations to converge reported);
* backward: ``jrnn.backward`` (the sequential adjoint loop) vs ``jrnn.parallel.backward``
  (the adjoint as one reverse prefix scan over `(H, H)` matrices), given the states.

Full-Jacobian work grows as ``T * H^3`` and its memory as ``T * H^2``: cases above
``--budget`` (``T * H^3``) are reported as skipped, not run. The results section is
written into ``benchmarks/RESULTS.md`` after a marker line (``benchmarks/compare.py``
keeps it when it rewrites the file).

    python benchmarks/parallel.py                       # the grid, writes RESULTS.md
    python benchmarks/parallel.py --hidden 8 --steps 1000,10000 --no-write
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp

import jrnn
from jrnn import parallel

MARK = "<!-- benchmarks/parallel.py writes below this line -->"
HIDDEN = (4, 8, 16, 32, 64)
STEPS = (1000, 10000, 100000)


def median_ms(fn: Callable, args: tuple, repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        jax.block_until_ready(fn(*args))
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return 1e3 * statistics.median(times)


def problem(batch: int, steps: int, hidden: int):
    kp, kx = jax.random.split(jax.random.PRNGKey(0))
    params = jrnn.init_params(kp, hidden, hidden)
    params = params._replace(w_h=0.8 * params.w_h)
    xs = jax.random.normal(kx, (batch, steps, hidden))
    return params, xs


def run_case(batch, steps, hidden, repeats, warmup, budget, log) -> dict:
    params, xs = problem(batch, steps, hidden)
    row: dict = {"B": batch, "T": steps, "H": hidden}
    seq_fwd = jax.jit(jrnn.forward)
    row["seq_fwd"] = median_ms(seq_fwd, (params, xs), repeats, warmup)
    hs, _ = seq_fwd(params, xs)
    dhs = jnp.ones_like(hs)
    seq_bwd = jax.jit(lambda p, x, h, d: jrnn.backward(p, x, None, h, d, None))
    row["seq_bwd"] = median_ms(seq_bwd, (params, xs, hs, dhs), repeats, warmup)
    full_ok = steps * hidden**3 <= budget
    for method in parallel.METHODS:
        if method == "newton" and not full_ok:
            row[method] = None
            continue
        fwd = jax.jit(lambda p, x, m=method: parallel.forward(p, x, method=m))
        out, _, info = fwd(params, xs)
        row[method] = median_ms(fwd, (params, xs), repeats, warmup)
        row[f"{method}_iters"] = int(info.iterations)
        row[f"{method}_ok"] = bool(info.converged)
        row[f"{method}_err"] = float(jnp.max(jnp.abs(out - hs)))
    if full_ok:
        par_bwd = jax.jit(lambda p, x, h, d: parallel.backward(p, x, None, h, d, None))
        row["par_bwd"] = median_ms(par_bwd, (params, xs, hs, dhs), repeats, warmup)
    else:
        row["par_bwd"] = None
    log(row)
    return row


def _fmt(ms: float | None) -> str:
    return "skipped" if ms is None else f"{ms:.2f}"


def _ratio(seq: float, par: float | None) -> str:
    if par is None:
        return "-"
    r = seq / par
    return f"**{r:.3g}x**" if r > 1 else f"{r:.2g}x"


def render(rows: list[dict], args) -> str:
    devices = jax.devices()
    lines = [
        MARK,
        "",
        "## Parallel in time: sequential scan vs DEER / quasi-DEER",
        "",
        f"`python benchmarks/parallel.py {' '.join(args.argv)}`".replace(" `", "`")
        + f" on {devices[0].platform.upper()} ({devices[0].device_kind}, "
        f"{len(devices)} device(s); {platform.processor() or platform.machine()}), "
        f"jax {jax.__version__}, {time.strftime('%Y-%m-%d')}. Batch {rows[0]['B']}, "
        f"F = H, tanh, orthogonal W_h scaled by 0.8; ms are medians of {args.repeats} runs "
        f"after {args.warmup} warm-up; speed-up = sequential ms / parallel ms (bold where "
        f"parallel wins). Newton (full Jacobian) and the parallel backward are skipped "
        f"where T * H^3 > {args.budget:.0e}.",
        "",
        "| H | T | forward: sequential ms | newton ms (iters) | speed-up | quasi ms (iters) "
        "| speed-up | backward: sequential ms | parallel ms | speed-up |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        newton = (
            "skipped"
            if r["newton"] is None
            else f"{r['newton']:.2f} ({r['newton_iters']}{'' if r['newton_ok'] else ', no conv.'})"
        )
        quasi = f"{r['quasi']:.2f} ({r['quasi_iters']}{'' if r['quasi_ok'] else ', no conv.'})"
        lines.append(
            f"| {r['H']} | {r['T']} | {r['seq_fwd']:.2f} | {newton} | "
            f"{_ratio(r['seq_fwd'], r['newton'])} | {quasi} | {_ratio(r['seq_fwd'], r['quasi'])} "
            f"| {r['seq_bwd']:.2f} | {_fmt(r['par_bwd'])} | {_ratio(r['seq_bwd'], r['par_bwd'])} |"
        )
    lines += ["", *crossover(rows)]
    return "\n".join(lines) + "\n"


def crossover(rows: list[dict]) -> list[str]:
    """Per H and method, the shortest T at which parallel beat sequential, if any."""
    ratios = [
        (r[seq] / r[key], label, r["H"], r["T"])
        for r in rows
        for key, seq, label in (
            ("newton", "seq_fwd", "newton forward"),
            ("quasi", "seq_fwd", "quasi forward"),
            ("par_bwd", "seq_bwd", "parallel backward"),
        )
        if r[key] is not None
    ]
    best, worst = max(ratios), min(ratios)
    out = [
        f"Best parallel case: {best[1]} at H = {best[2]}, T = {best[3]}, {best[0]:.3g}x the "
        f"sequential speed; worst: {worst[1]} at H = {worst[2]}, T = {worst[3]}, "
        f"{worst[0]:.2g}x.",
        "",
        "Where parallel wins (shortest measured T with a speed-up > 1, per H):",
        "",
    ]
    for h in sorted({r["H"] for r in rows}):
        parts = []
        for key, seq, label in (
            ("newton", "seq_fwd", "newton forward"),
            ("quasi", "seq_fwd", "quasi forward"),
            ("par_bwd", "seq_bwd", "parallel backward"),
        ):
            wins = [r["T"] for r in rows if r["H"] == h and r[key] is not None and r[seq] > r[key]]
            ran = [r for r in rows if r["H"] == h and r[key] is not None]
            if wins:
                parts.append(f"{label} from T = {min(wins)}")
            elif ran:
                parts.append(f"{label} never (up to T = {max(r['T'] for r in ran)})")
            else:
                parts.append(f"{label} not run")
        out.append(f"- H = {h}: " + "; ".join(parts) + ".")
    return out


# benchmarks/multiprocess.py's section follows this one; it is kept as it is
MULTIPROCESS_MARK = "<!-- benchmarks/multiprocess.py writes below this line -->"


def write(path: Path, section: str) -> None:
    old = path.read_text() if path.exists() else ""
    tail = old[old.index(MULTIPROCESS_MARK) :] if MULTIPROCESS_MARK in old else ""
    old = old[: len(old) - len(tail)]
    head = old[: old.index(MARK)].rstrip() if MARK in old else old.rstrip()
    path.write_text((head + "\n\n" if head else "") + section + ("\n" + tail if tail else ""))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hidden", default=",".join(map(str, HIDDEN)), help="comma-separated H")
    p.add_argument("--steps", default=",".join(map(str, STEPS)), help="comma-separated T")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--budget", type=float, default=4e9, help="max T * H^3 for full Jacobians")
    p.add_argument("--out", default=str(Path(__file__).with_name("RESULTS.md")))
    p.add_argument("--no-write", action="store_true", help="print only")
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)
    try:
        hidden = [int(v) for v in args.hidden.split(",")]
        steps = [int(v) for v in args.steps.split(",")]
    except ValueError:
        p.error("--hidden and --steps take comma-separated integers")
    if min(hidden + steps + [args.batch, args.repeats]) <= 0:
        p.error("sizes and --repeats must be positive")
    rows = [
        run_case(
            args.batch, t, h, args.repeats, args.warmup, args.budget, lambda r: print(r, flush=True)
        )
        for h in hidden
        for t in steps
    ]
    section = render(rows, args)
    print(section)
    if not args.no_write:
        write(Path(args.out), section)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
