"""The maintainers' scripts of benchmarks/ run end to end on tiny shapes (smoke tests; no
timing is asserted): limits.py (RESULTS.md: jrnn bench's tables and the maintainers'
section), parallel.py and multiprocess.py."""

import argparse
import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load(name: str = "limits"):
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_limits_runs_and_reports(tmp_path, capsys):
    limits = _load()
    out = tmp_path / "RESULTS.md"
    argv = ["--shape", "2,5,3,4", "--repeats", "2", "--warmup", "1", "--skip-remat"]
    assert limits.main([*argv, "--out", str(out)]) == 0
    text = out.read_text()
    assert text.startswith("# Benchmark results")  # jrnn bench's report first
    assert "## (B, T, F, H) = (2, 5, 3, 4), float32" in text
    assert "| jrnn |" in text and "| plain-scan |" in text
    assert "1024x1024 float32 matmul" in text
    # what bounds jrnn at the shape, measured in the same run
    assert text.index(limits.MARK) < text.index("## What bounds the train step")
    assert "| (2, 5, 3, 4) |" in text.split("## What bounds the train step")[1]


def _row(train_ms, fwd_ms, temp=None, compile_s=0.2, **extra):
    row = {"label": "x", "train_ms": train_ms, "fwd_ms": fwd_ms, "train_compile_s": compile_s}
    if temp is not None:
        row["train_temp"] = temp
    return {**row, **extra}


def test_targets_state_each_miss_with_this_runs_limits():
    compare = _load()
    small, large = compare.GRID[1], compare.GRID[-1]
    hs_bytes = lambda s: s[0] * s[1] * s[3] * 4
    lim = {"ref_fwd_ms": 0.8, "ref_train_ms": 2.0, "loop_ms": 0.5, "loop_gflops": 70.0}
    lim_faults = {**lim, "faults": 27000.0, "sys_ms": 60.0}
    results = [
        (
            small,
            {
                "jrnn": _row(2.0, 1.0, 2.52 * hs_bytes(small), limits=lim),
                "plain-scan": _row(3.0, 0.9, 4.5 * hs_bytes(small), compile_s=0.1),
                "flax": {"missing": "not installed (flax)"},
            },
        ),
        (
            large,
            {
                "jrnn": _row(250.0, 100.0, 2.0 * hs_bytes(large), limits=lim_faults),
                "haiku": _row(260.0, 99.0, 2.8 * hs_bytes(large)),
            },
        ),
    ]
    lines = compare.targets(results, 220.0, [((32, 4096, 64, 256), {"jrnn": 2.6})])
    text = "\n".join(lines)
    assert f"- {small}: train 1.50x the fastest peer (target >= 2.0x): MISSED" in text
    assert "forward 0.90x (target >= 1x): MISSED" in text  # plain-scan's 0.9 ms vs jrnn's 1.0
    assert "compile 0.200 s vs plain-scan 0.100 s: MISSED" in text
    assert "jrnn 1.00x that; the fastest peer took 1.50x the reference step" in text
    assert "    - forward: the reference forward" in text
    assert "2 + F/H + H/(T*B) = 2.516" in text
    assert f"- {large}: train 1.04x the fastest peer (target >= 1.3x): MISSED" in text
    assert "27000 page faults and 60.0 ms of kernel CPU time" in text
    assert "of the matmul GFLOP/s (target >= 75%): MISSED" in text
    assert "equivalent of 70 GFLOP/s (32% of the matmul)" in text
    assert "- (32, 4096, 64, 256): temp memory 2.60x hs (target <= 2.5x): MISSED" in text
    table = "\n".join(compare.limits_table(results, 220.0))
    assert f"| {small} | 2.000 | 2.000 | 1.00 | 1.50 | 70 (32%) | n/a |" in table
    assert f"| {large} | 250.000 | 2.000 | 125.00 | 130.00 | 70 (32%) | 27000 (60.0) |" in table


def test_targets_without_limits_or_peers():
    compare = _load()
    shape = compare.GRID[0]
    alone = [(shape, {"jrnn": _row(1.0, 1.0, 1.0)})]
    assert compare.targets(alone, 100.0, []) == []
    assert compare.limits_table(alone, 100.0) == []
    no_lim = [(shape, {"jrnn": _row(1.0, 1.0, 1.0), "haiku": _row(3.0, 2.0, 1.0)})]
    lines = compare.targets(no_lim, 100.0, [])
    assert len(lines) == 1 and ": met;" in lines[0]


def test_flop_count():
    compare = _load()
    assert compare.flops((2, 3, 4, 5), True) == 6 * 2 * 3 * (4 * 5 + 5 * 5)


def test_parallel_benchmark_runs_and_keeps_the_results_file(tmp_path):
    module = _load("parallel")
    out = tmp_path / "RESULTS.md"
    out.write_text("# compare.py's results\n")
    argv = ["--hidden", "2", "--steps", "8", "--repeats", "1", "--warmup", "1", "--out", str(out)]
    assert module.main(argv) == 0
    assert module.main(argv) == 0  # rewrites its own section, once
    text = out.read_text()
    assert text.startswith("# compare.py's results")
    assert text.count(module.MARK) == 1
    assert "| 2 | 8 |" in text and "Where parallel wins" in text


def test_multiprocess_benchmark_section_and_the_others_keep_it(tmp_path):
    multiprocess, parallel = _load("multiprocess"), _load("parallel")
    out = tmp_path / "RESULTS.md"
    out.write_text("# compare.py's results\n")
    args = argparse.Namespace(argv=[], seq_len=10, hidden=8, batch=16, steps=20, log_every=5)
    rows = [
        {"case": "1 process", "steps_per_s": 100.0, "wall_s": 3.0, "test_loss": 0.25},
        {
            "case": "2 processes (jrnn launch)",
            "steps_per_s": 40.0,
            "wall_s": 6.0,
            "test_loss": 0.25,
        },
    ]
    multiprocess.write(out, multiprocess.render(rows, args))
    multiprocess.write(out, multiprocess.render(rows, args))  # its own section, once
    argv = ["--hidden", "2", "--steps", "8", "--repeats", "1", "--warmup", "1", "--out", str(out)]
    assert parallel.main(argv) == 0  # writes its section before, keeps multiprocess's
    text = out.read_text()
    assert text.count(multiprocess.MARK) == 1 and text.count(parallel.MARK) == 1
    assert text.index("# compare.py") < text.index(parallel.MARK) < text.index(multiprocess.MARK)
    assert "| 2 processes (jrnn launch) | 40.0 | 0.40x | 6.0 | 0.25 |" in text
