"""``jrnn bench`` and ``jrnn.bench``: a tiny shape through every output, rows that say why
an implementation cannot run, and the tuning table's round trip into ``impl="auto"``."""

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jrnn
import jrnn.bench as jb
from jrnn.__main__ import main
from jrnn.bench.tuning import DispatchTable, bucket

FIELDS = {
    "schema",
    "device_kind",
    "backend",
    "cpu",
    "versions",
    "B",
    "T",
    "F",
    "H",
    "dtype",
    "impl",
    "work",
    "status",
    "reason",
    "median_s",
    "q1_s",
    "q3_s",
    "min_s",
    "max_s",
    "repeats",
    "compile_s",
    "temp_bytes",
    "noisy",
    "remeasured",
}


def test_a_tiny_shape_through_every_output(tmp_path, capsys):
    out = {k: tmp_path / f"bench.{k}" for k in ("jsonl", "md", "png")}
    argv = [
        "bench",
        "--shape",
        "2,6,3,4",
        "--shape",
        "2,12,3,4",
        "--repeats",
        "3",
        "--warmup",
        "1",
        "--no-progress",
        "--json",
        str(out["jsonl"]),
        "--markdown",
        str(out["md"]),
        "--plot",
        str(out["png"]),
    ]
    for name in ("jrnn", "jrnn-pallas", "plain-scan", "flax", "haiku", "torch"):
        argv += ["--impl", name]
    assert main(argv) == 0
    rows = [json.loads(line) for line in out["jsonl"].read_text().splitlines()]
    assert rows and all(set(r) == FIELDS for r in rows)
    assert {r["schema"] for r in rows} == {"jrnn.bench/1"}
    by = {(r["T"], r["impl"], r["work"]): r for r in rows}
    assert len(by) == 2 * 6 * 2  # every shape, implementation and work: a row
    for t in (6, 12):
        for work in ("forward", "train"):
            mine = by[(t, "jrnn", work)]
            assert mine["status"] == "ok" and mine["repeats"] == (20 if mine["remeasured"] else 3)
            assert 0 < mine["min_s"] <= mine["q1_s"] <= mine["median_s"] <= mine["q3_s"]
            assert mine["q3_s"] <= mine["max_s"]
            assert mine["compile_s"] > 0 and mine["temp_bytes"] >= 0
            kernels = by[(t, "jrnn-pallas", work)]
            assert kernels["status"] == "unavailable" and "interpret mode" in kernels["reason"]
            assert kernels["median_s"] is None
    haiku = by[(6, "haiku", "train")]  # a peer: timed, or a row saying it is not installed
    assert haiku["status"] == "ok" or "not installed" in haiku["reason"]
    text = capsys.readouterr().out
    assert "B=2 T=6 F=3 H=4 float32" in text and "train ms [IQR]" in text
    report = out["md"].read_text()
    assert report.startswith("# jrnn bench") and "## Summary" in report
    # the shape's ratio, or (a sub-millisecond time can stay spread) its name among those left out
    assert "| (2, 6, 3, 4) | float32 |" in report or "noisy: (2, 6, 3, 4) float32" in report
    assert out["png"].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_shape_over_the_kernels_limit_is_a_row():
    rows = jb.run(
        [(2, 4, 3, 300)], ("float32",), ("jrnn-pallas",), repeats=1, warmup=0, interpret=True
    )
    assert {r["status"] for r in rows} == {"unavailable"}
    assert "hidden_size <= 128" in rows[0]["reason"]


def test_unknown_implementations_and_shapes_are_refused(capsys):
    with pytest.raises(ValueError, match="unknown implementation 'numba'"):
        jb.run([(1, 2, 3, 4)], impls=("numba",))
    with pytest.raises(SystemExit):
        main(["bench", "--shape", "1,2,3"])
    assert "expected B,T,F,H, four positive ints; got '1,2,3'" in capsys.readouterr().err


def test_the_tuning_round_trip(tmp_path, capsys):
    """--tune times scan against the kernels (here in interpret mode) and writes a table
    that load_tuning reads back for this device and jax version."""
    path = tmp_path / "tuning.json"
    argv = [
        "bench",
        "--tune",
        str(path),
        "--shape",
        "2,4,4,4",
        "--dtype",
        "float32",
        "--repeats",
        "2",
        "--warmup",
        "1",
        "--interpret",
        "--no-progress",
    ]
    assert main(argv) == 0
    saved = json.loads(path.read_text())
    assert saved["schema"] == "jrnn.tuning/1" and saved["jax_version"] == jax.__version__
    assert list(saved["choices"]) == ["float32/B2/T4/H4"]
    assert saved["choices"]["float32/B2/T4/H4"] in ("scan", "pallas")
    table = jb.load_tuning(path)
    assert table is not None and dict(table.choices) == saved["choices"]
    assert "buckets run the kernels under impl='auto'" in capsys.readouterr().err


def test_a_table_of_another_device_or_jax_is_ignored_with_a_warning(tmp_path):
    table = DispatchTable("TPU v9", jax.__version__, (("float32/B8/T8/H8", "pallas"),))
    path = tmp_path / "other.json"
    path.write_text(json.dumps(table.to_json()))
    with pytest.warns(UserWarning, match="measured on TPU v9 .* ignored"):
        assert jb.load_tuning(path) is None
    path.write_text(json.dumps({"schema": "something else"}))
    with pytest.raises(ValueError, match="not a jrnn tuning table"):
        jb.load_tuning(path)


def test_auto_follows_a_synthetic_table_bit_for_bit():
    """Where the table says pallas, impl='auto' is impl='pallas' exactly (values and
    gradients, eagerly and under jit); elsewhere it is the scan loop."""
    table = DispatchTable.from_choices({("float32", 4, 8, 16): "pallas"})
    params = jrnn.init_params(jax.random.PRNGKey(0), 3, 16)
    xs = jax.random.normal(jax.random.PRNGKey(1), (4, 8, 3))
    other = jax.random.normal(jax.random.PRNGKey(2), (4, 40, 3))  # T bucket 64: not in it

    def loss(p, x, impl, tuning=None):
        hs, h_last = jrnn.rnn(p, x, impl=impl, tuning=tuning)
        return jnp.sum(hs**2) + jnp.sum(jnp.sin(h_last))

    for f in (loss, jax.jit(loss, static_argnums=(2, 3))):
        for x, expected in ((xs, "pallas"), (other, "scan")):
            got = jax.value_and_grad(f)(params, x, "auto", table)
            want = jax.value_and_grad(f)(params, x, expected)
            for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want), strict=True):
                np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # the kernels and the loop differ in rounding: the test can tell them apart
    pallas, scan = (jrnn.rnn(params, xs, impl=i)[0] for i in ("pallas", "scan"))
    assert not np.array_equal(np.asarray(pallas), np.asarray(scan))
    # without a table, auto stays the scan loop
    np.testing.assert_array_equal(jrnn.rnn(params, xs)[0], scan)


def test_auto_keeps_the_loop_where_the_kernels_cannot_hold_the_call():
    table = DispatchTable.from_choices({("float32", 2, 4, 256): "pallas"})  # H over 128
    params = jrnn.init_params(jax.random.PRNGKey(0), 3, 200)
    xs = jnp.ones((2, 4, 3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hs, _ = jrnn.rnn(params, xs, impl="auto", tuning=table)
    np.testing.assert_array_equal(hs, jrnn.rnn(params, xs, impl="scan")[0])
    with pytest.raises(TypeError, match="tuning must be None or a table"):
        jrnn.rnn(params, xs, tuning={"float32": "pallas"})


def test_buckets():
    assert [bucket(n) for n in (0, 1, 2, 3, 4, 5, 1000, 1024, 1025)] == [
        1,
        1,
        2,
        4,
        4,
        8,
        1024,
        1024,
        2048,
    ]
    table = DispatchTable.from_choices({("bfloat16", 64, 1000, 100): "pallas"})
    assert dict(table.choices) == {"bfloat16/B64/T1024/H128": "pallas"}
    assert table.choose(jnp.bfloat16, 40, 600, 128) == "pallas"
    assert table.choose(jnp.float32, 40, 600, 128) == "scan"
    assert hash(table) == hash(DispatchTable.from_choices({("bfloat16", 64, 1000, 100): "pallas"}))


def test_a_call_that_fails_at_run_time_is_a_row_and_the_others_are_timed():
    from jrnn.bench.measure import interleaved

    def timer(calls, repeats, warmup, budget_s):  # plain-scan's calls fail when they run
        if "plain-scan" in calls:
            raise RuntimeError("out of memory")
        return interleaved(calls, repeats, warmup, budget_s)

    names = ("jrnn", "plain-scan")
    rows = jb.run([(2, 4, 3, 4)], ("float32",), names, repeats=2, warmup=1, timer=timer)
    by = {(r["impl"], r["work"]): r for r in rows}
    for work in ("forward", "train"):
        assert by[("plain-scan", work)]["status"] == "unavailable"
        assert by[("plain-scan", work)]["reason"] == "failed to run: RuntimeError: out of memory"
        assert by[("jrnn", work)]["status"] == "ok"


def test_the_noise_rule():
    from jrnn.bench.report import NOISY_IQR, noisy

    assert NOISY_IQR == 0.3
    assert not noisy(0.95, 1.05, 1.0) and not noisy(0.9, 1.2, 1.0)
    assert noisy(0.8, 1.2, 1.0) and noisy(1.777, 3.749, 2.098)  # the torch row
    assert not noisy(None, None, None)


@pytest.mark.parametrize("second", ["narrow", "wide"])
def test_a_wide_spread_is_timed_again_then_flagged_and_left_out_of_the_summary(second):
    """A synthetic spread (a timer of the test's, through run's timer=): timed once more; still wide, flagged in the
    rows, the table and the report, and no ratio is built on it."""
    from jrnn.bench import report
    from jrnn.bench.measure import Stats

    wide = Stats(2.0, 1.7, 3.7, 1.5, 4.0, 10)
    narrow = Stats(1.0, 0.98, 1.03, 0.95, 1.1, 10)
    calls = []

    def timed(group, repeats, warmup, budget_s):
        calls.append(sorted(group))
        again = len(group) == 1  # the re-measurement of the wide one alone
        pick = lambda n: wide if n == "plain-scan" and (not again or second == "wide") else narrow
        return {n: pick(n) for n in group}

    rows = jb.run(
        [(2, 4, 3, 4)], ("float32",), ("jrnn", "plain-scan"), repeats=3, warmup=0, timer=timed
    )
    by = {(r["impl"], r["work"]): r for r in rows}
    assert ["plain-scan"] in calls  # the wide one, timed again alone
    peer, mine = by[("plain-scan", "train")], by[("jrnn", "train")]
    assert peer["remeasured"] and not mine["remeasured"] and not mine["noisy"]
    assert peer["noisy"] == (second == "wide")
    table = report.table(rows)
    summary = report.markdown(rows, "jrnn bench", "now").split("## (B, T, F, H)")[0]
    if second == "wide":
        assert "~2000.000 [1700.000, 3700.000]" in table and "noisy (~)" in table
        assert "| (2, 4, 3, 4) |" not in summary  # no ratio on a noisy row
        assert "Left out, a train time there being noisy: (2, 4, 3, 4) float32." in summary
    else:
        assert "~" not in table and "| (2, 4, 3, 4) | float32 | 1000.000 | plain-scan |" in summary
