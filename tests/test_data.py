"""Your own sequences (jrnn.data): the loader's reading of shapes and dtypes, each bad file's
one-line error, the split, and ``jrnn train --data`` / ``jrnn eval`` / ``jrnn predict``
round trips through a run folder."""

from __future__ import annotations

import json

import jax
import numpy as np
import optax
import pytest

import jrnn
from jrnn import data as jdata
from jrnn.__main__ import main

N, T, F = 60, 7, 3


def _arrays(kind: str, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(N, T, F)).astype(np.float32)
    lengths = rng.integers(2, T + 1, size=N)
    targets = {
        "many-to-one-classes": (x[:, :, 0].sum(1) > 0).astype(np.int64),
        "many-to-many-classes": (x[:, :, 1] > 0).astype(np.int32),
        "many-to-one-floats": x.sum(1)[:, :2],
        "many-to-many-floats": np.cumsum(x[:, :, :1], axis=1),
    }[kind]
    return {"inputs": x, "targets": targets, "lengths": lengths}


@pytest.mark.parametrize(
    ("kind", "loss", "many", "outputs"),
    [
        ("many-to-one-classes", "cross_entropy", False, 2),
        ("many-to-many-classes", "cross_entropy", True, 2),
        ("many-to-one-floats", "mse", False, 2),
        ("many-to-many-floats", "mse", True, 1),
    ],
)
def test_the_loss_and_the_readout_come_from_the_targets(tmp_path, kind, loss, many, outputs):
    path = tmp_path / "d.npz"
    np.savez(path, **_arrays(kind))
    data = jdata.load(path)
    assert (data.loss, data.return_sequences, data.output_size) == (loss, many, outputs)
    assert data.batch.inputs.dtype == np.float32 and data.batch.lengths.dtype == np.int32
    assert (data.size, data.seq_len, data.input_size) == (N, T, F)


def test_given_loss_and_readout_override_the_reading():
    x = np.zeros((4, 5, 2), np.float32)
    floats = np.arange(20, dtype=np.float32).reshape(4, 5)
    assert jdata.from_arrays(x, floats).batch.targets.shape == (4, 5)  # (N, O): O = 5
    every = jdata.from_arrays(x, floats, return_sequences=True)
    assert every.return_sequences and every.batch.targets.shape == (4, 5, 1)
    ints = np.array([0, 1, 2, 1])
    regress = jdata.from_arrays(x, ints, loss="mse")
    assert regress.loss == "mse" and regress.batch.targets.shape == (4, 1)
    assert jdata.from_arrays(x, np.ones(4, np.float32)).batch.targets.shape == (4, 1)
    column = jdata.from_arrays(x, ints[:, None])  # a column of labels: one per sequence
    assert not column.return_sequences and column.batch.targets.shape == (4,)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"inputs": None}, r"no 'inputs' array \(it holds \['lengths', 'targets'\]\)"),
        ({"targets": None}, r"no 'targets' array"),
        ({"lenghts": np.ones(N, int)}, r"unexpected array 'lenghts' \(did you mean 'lengths'\?\)"),
        (
            {"inputs": np.zeros((N, T))},
            r"'inputs' must be \(N, T, F\) with N, T, F >= 1; got \(60, 7\)",
        ),
        (
            {"inputs": np.full((N, T, F), np.nan)},
            r"'inputs' holds 1260 NaN or inf values \(the first at index \(0, 0, 0\)\)",
        ),
        ({"targets": np.full((N, 2), np.inf)}, r"'targets' holds 120 NaN or inf"),
        (
            {"targets": np.zeros(N + 1, int)},
            r"'targets' must have the inputs' N = 60 first; got \(61,\)",
        ),
        (
            {"targets": np.zeros((N, T + 1), int)},
            r"classes \(N, T\) = \(60, 7\) expected; got \(60, 8\)",
        ),
        (
            {"targets": np.zeros((N, T + 1, 1))},
            r"'targets' must be \(N, T, O\) with T = 7 for the MSE; got \(60, 8, 1\)",
        ),
        ({"targets": -np.ones(N, int)}, r"classes must be >= 0; got -1"),
        (
            {"lengths": np.full(N, T + 1)},
            r"'lengths' must lie in \[1, T = 7\]; got values in \[8, 8\]",
        ),
        (
            {"lengths": np.zeros(N, int)},
            r"'lengths' must lie in \[1, T = 7\]; got values in \[0, 0\]",
        ),
        (
            {"lengths": np.ones(N - 1, int)},
            r"'lengths' must be \(60,\) integers, one per sequence; got \(59,\)",
        ),
        ({"inputs": np.array([["a"]])}, r"'inputs' must hold real numbers; got dtype <U1"),
    ],
    ids=lambda v: "" if isinstance(v, str) else "-".join(f"{k}" for k in v),
)
def test_each_bad_file_is_one_line_naming_the_array(tmp_path, capsys, change, message):
    arrays = {**_arrays("many-to-one-classes"), **change}
    path = tmp_path / "bad.npz"
    np.savez(path, **{k: v for k, v in arrays.items() if v is not None})
    with pytest.raises(ValueError, match=message):
        jdata.load(path)
    # and on the command line: one line, exit 2, no run folder made
    out = tmp_path / "run"
    assert main(["train", "--data", str(path), "--out", str(out), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"jrnn train: error: --data {path}"), err
    assert not out.exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [(None, "no such file"), (b"not a zip", "not a readable .npz file")],
)
def test_a_missing_or_unreadable_file(tmp_path, content, message):
    path = tmp_path / "x.npz"
    if content is not None:
        path.write_bytes(content)
    with pytest.raises(ValueError, match=message):
        jdata.load(path)


def test_the_split_is_fixed_disjoint_and_complete():
    data = jdata.from_arrays(**_arrays("many-to-one-floats"))
    train, val, test = data.split(0.2, 0.1)
    assert (train.size, val.size, test.size) == (42, 12, 6)
    rows = [tuple(d.batch.inputs[:, 0, 0]) for d in (train, val, test)]
    assert len(set(sum(rows, ()))) == N  # disjoint and complete
    again = data.split(0.2, 0.1)
    assert all(
        np.array_equal(a.batch.inputs, b.batch.inputs)
        for a, b in zip(again, (train, val, test), strict=True)
    )
    assert data.split(0.0, 0.1)[1].size == 0
    with pytest.raises(ValueError, match="cannot be split"):
        jdata.from_arrays(np.zeros((2, 3, 1)), np.zeros(2, int)).split(0.5, 0.5)
    with pytest.raises(ValueError, match=r"val_fraction must lie in \[0, 1\)"):
        data.split(1.0, 0.1)


def test_a_dataset_trains_with_the_public_functions():
    """The Python route the module's docstring gives: load, split, train, evaluate."""
    data = jdata.from_arrays(**_arrays("many-to-many-floats"))
    train, _, test = data.split()
    params = jrnn.init_model(jax.random.PRNGKey(0), F, 16, data.output_size)
    step = jrnn.make_train_step(optax.adam(1e-2), **data.options)
    opt_state = optax.adam(1e-2).init(params)
    before = jrnn.evaluate(params, test.batch, **data.options)["loss"]
    for _ in range(30):
        params, opt_state, _ = step(params, opt_state, train.batch)
    after = jrnn.evaluate(params, test.batch, **data.options)
    assert isinstance(after["loss"], float) and after["loss"] < before


@pytest.mark.parametrize("kind", ["many-to-one-classes", "many-to-many-floats"])
def test_train_eval_predict_round_trip(tmp_path, capsys, kind):
    path = tmp_path / "mine.npz"
    np.savez(path, **_arrays(kind))
    run = tmp_path / "run"
    argv = [
        "train",
        "--data",
        str(path),
        "--out",
        str(run),
        "--steps",
        "40",
        "--log-every",
        "10",
        "--eval-every",
        "20",
        "--checkpoint-every",
        "20",
        "--hidden",
        "8",
        "--no-progress",
    ]
    assert main(argv) == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {r["split"] for r in rows} == {"train", "val", "test"}
    assert [r["step"] for r in rows if r["split"] == "test"] == [40]  # the test set: at the end
    result = json.loads((run / "result.json").read_text())
    config = json.loads((run / "config.json").read_text())
    assert config["task"] == "data" and config["data"] == str(path.absolute())
    assert (run / "metrics.png").is_file()
    capsys.readouterr()

    # jrnn eval: the run's test split, what result.json holds; --json; a file of yours
    assert main(["eval", str(run), "--json"]) == 0
    said = json.loads(capsys.readouterr().out)
    assert said["step"] == 40 and said["loss"] == pytest.approx(result["test"]["loss"], rel=1e-6)
    assert main(["eval", str(run), "--data", str(path)]) == 0
    line = capsys.readouterr().out
    assert line.startswith(f"jrnn eval: {run} (step 40) on {path} (60 sequences): ")

    # jrnn predict: the outputs jrnn.load_run gives, from an .npz without targets and an .npy
    loaded = jrnn.load_run(run)
    arrays = _arrays(kind, seed=1)
    expect = np.asarray(loaded.predict(arrays["inputs"], arrays["lengths"]))
    inputs_only = tmp_path / "new.npz"
    np.savez(inputs_only, inputs=arrays["inputs"], lengths=arrays["lengths"])
    assert (
        main(["predict", str(run), "--data", str(inputs_only), "--out", str(tmp_path / "p.npy")])
        == 0
    )
    np.testing.assert_allclose(np.load(tmp_path / "p.npy"), expect, rtol=1e-6, atol=1e-6)
    np.save(tmp_path / "x.npy", arrays["inputs"])
    assert (
        main(
            [
                "predict",
                str(run),
                "--data",
                str(tmp_path / "x.npy"),
                "--out",
                str(tmp_path / "q.npy"),
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "q.npy").shape == expect.shape

    # resume continues from the checkpoint
    assert main(["train", "--out", str(run), "--resume", "--steps", "60", "--no-progress"]) == 0
    assert json.loads((run / "result.json").read_text())["step"] == 60


def test_eval_and_predict_refuse_what_does_not_fit(tmp_path, capsys):
    path = tmp_path / "mine.npz"
    np.savez(path, **_arrays("many-to-one-classes"))
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(path),
                "--out",
                str(run),
                "--steps",
                "10",
                "--log-every",
                "10",
                "--hidden",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    capsys.readouterr()
    other = tmp_path / "other.npz"
    np.savez(other, inputs=np.zeros((3, T, F + 1), np.float32), targets=np.zeros(3, int))
    cases = [
        (
            ["eval", str(run), "--data", str(other)],
            "inputs have 4 features; the run's model takes 3",
        ),
        (["eval", str(tmp_path / "nowhere")], "does not exist"),
        (
            ["predict", str(run), "--data", str(other), "--out", str(tmp_path / "p.npy")],
            "inputs have 4 features",
        ),
        (
            ["predict", str(run), "--data", str(path), "--out", str(tmp_path / "no" / "p.npy")],
            "no such folder",
        ),
    ]
    for argv, message in cases:
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert (
            len(err) == 1 and err[0].startswith(f"jrnn {argv[0]}: error: ") and message in err[0]
        ), err


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "data"], "--data: --task data needs --data FILE"),
        (
            ["--task", "copy", "--data", "x.npz"],
            "--task: --data trains on the file; the copy task takes no --data",
        ),
        (["--loss", "mse"], "--loss: --loss is for --data runs"),
    ],
)
def test_data_options_that_contradict(tmp_path, capsys, argv, message):
    assert main(["train", *argv, "--out", str(tmp_path / "r"), "--no-progress"]) == 2
    assert capsys.readouterr().err.splitlines()[0] == f"jrnn train: error: {message}"


def test_a_changed_file_is_refused_by_resume_and_eval(tmp_path, capsys):
    """The run folder keeps the file's SHA-256: a resume, or jrnn eval of the run's test
    split, on other sequences than the run's is refused in one line."""
    path = tmp_path / "mine.npz"
    np.savez(path, **_arrays("many-to-one-floats"))
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(path),
                "--out",
                str(run),
                "--steps",
                "10",
                "--log-every",
                "10",
                "--hidden",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    assert len(json.loads((run / "config.json").read_text())["data_sha256"]) == 64
    np.savez(path, **_arrays("many-to-one-floats", seed=7))  # the same shapes, other numbers
    capsys.readouterr()
    for argv in (
        ["train", "--out", str(run), "--resume", "--steps", "20", "--no-progress"],
        ["eval", str(run)],
    ):
        assert main(argv) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "has changed since the run started" in err[0], err
    assert main(["eval", str(run), "--data", str(path)]) == 0  # a file named: evaluated as given


def test_a_run_whose_file_is_gone_still_loads_and_predicts(tmp_path, capsys):
    """The folder records the model's sizes, loss and readout (config.json's data_info): a
    moved file leaves predict working and the test split refused in one line."""
    path = tmp_path / "mine.npz"
    arrays = _arrays("many-to-many-classes")
    np.savez(path, **arrays)
    run = tmp_path / "run"
    assert (
        main(
            [
                "train",
                "--data",
                str(path),
                "--out",
                str(run),
                "--steps",
                "10",
                "--log-every",
                "10",
                "--hidden",
                "4",
                "--no-progress",
            ]
        )
        == 0
    )
    expect = np.asarray(jrnn.load_run(run).predict(arrays["inputs"], arrays["lengths"]))
    path.rename(tmp_path / "moved.npz")
    loaded = jrnn.load_run(run)
    assert (loaded.task.loss, loaded.task.return_sequences) == ("cross_entropy", True)
    np.testing.assert_array_equal(
        np.asarray(loaded.predict(arrays["inputs"], arrays["lengths"])), expect
    )
    np.save(tmp_path / "x.npy", arrays["inputs"])
    capsys.readouterr()
    assert (
        main(
            [
                "predict",
                str(run),
                "--data",
                str(tmp_path / "x.npy"),
                "--out",
                str(tmp_path / "p.npy"),
            ]
        )
        == 0
    )
    assert np.load(tmp_path / "p.npy").shape == (N, T, 2)
    capsys.readouterr()
    assert main(["eval", str(run)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0] == f"jrnn eval: error: --data {path}: no such file", err
