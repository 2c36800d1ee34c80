"""benchmarks/compare.py runs end to end on a tiny shape (a smoke test; no timing is asserted)."""

import importlib.util
import pathlib

ROOT = pathlib.Path(__file__).resolve().parents[1]


def _load():
    spec = importlib.util.spec_from_file_location("compare", ROOT / "benchmarks" / "compare.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_compare_runs_and_reports(tmp_path, capsys):
    compare = _load()
    out = tmp_path / "RESULTS.md"
    argv = ["--shape", "2,5,3,4", "--peers", "plain-scan", "--repeats", "2", "--warmup", "1"]
    assert compare.main([*argv, "--out", str(out), "--skip-remat"]) == 0
    text = out.read_text()
    assert "## (B, T, F, H) = (2, 5, 3, 4)" in text
    assert "| jrnn |" in text and "| plain-scan |" in text
    assert "train: fastest peer / jrnn" in text
    assert "1024x1024 float32 matmul" in text
    # what bounds jrnn at the shape, measured in the same run
    assert "## What bounds the train step" in text
    assert "| (2, 5, 3, 4) |" in text.split("## What bounds the train step")[1]


def test_missing_peer_is_reported_not_skipped(monkeypatch):
    compare = _load()

    def broken(*args):
        raise ImportError("no module named 'nopeer'", name="nopeer")

    monkeypatch.setitem(compare.MAKERS, "flax", broken)
    rows = compare.run_shape((1, 3, 2, 2), ["jrnn", "flax"], 1, 0, lambda s: None)
    assert rows["flax"] == {"missing": "not installed (nopeer)"}
    assert "train_ms" in rows["jrnn"]


def test_flop_count():
    compare = _load()
    assert compare.flops((2, 3, 4, 5), True) == 6 * 2 * 3 * (4 * 5 + 5 * 5)


def test_parallel_benchmark_runs_and_keeps_the_results_file(tmp_path):
    spec = importlib.util.spec_from_file_location(
        "parallel_bench", ROOT / "benchmarks" / "parallel.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "RESULTS.md"
    out.write_text("# compare.py's results\n")
    argv = ["--hidden", "2", "--steps", "8", "--repeats", "1", "--warmup", "1", "--out", str(out)]
    assert module.main(argv) == 0
    assert module.main(argv) == 0  # rewrites its own section, once
    text = out.read_text()
    assert text.startswith("# compare.py's results")
    assert text.count(module.MARK) == 1
    assert "| 2 | 8 |" in text and "Where parallel wins" in text
