"""jrnn.cli.runs: the run folder's lock and names, and loading a trained run."""

from __future__ import annotations

import threading
import time

import jax
import numpy as np
import pytest

import jrnn
from jrnn.cli import main
from jrnn.cli.checkpoint import CheckpointError
from jrnn.cli.runs import RunDirError, create_default_run_dir, lock_run_dir

TINY = [
    "--seq-len",
    "6",
    "--hidden",
    "8",
    "--batch",
    "4",
    "--log-every",
    "10",
    "--eval-every",
    "10",
    "--checkpoint-every",
    "10",
    "--eval-size",
    "20",
    "--no-progress",
]


def test_default_run_folders_never_collide(tmp_path, monkeypatch):
    monkeypatch.setattr(time, "strftime", lambda fmt: "20250101-000000")  # all in one second
    made: list = []
    threads = [
        threading.Thread(target=lambda: made.append(create_default_run_dir("adding", tmp_path)))
        for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(made)) == 8 and all(p.is_dir() for p in made)
    assert sorted(p.name for p in made)[:2] == [
        "adding-20250101-000000",
        "adding-20250101-000000-2",
    ]


def test_a_run_folder_has_one_owner(tmp_path):
    lock = lock_run_dir(tmp_path / "run")
    try:
        with pytest.raises(RunDirError, match="is in use by another jrnn train"):
            lock_run_dir(tmp_path / "run")
    finally:
        lock.release()
    lock_run_dir(tmp_path / "run").release()  # free again once released


def test_load_run_carries_every_option(tmp_path):
    out = tmp_path / "run"
    argv = ["train", *TINY, "--task", "sine", "--activation", "linear", "--steps", "10"]
    assert main([*argv, "--out", str(out)]) == 0
    run = jrnn.load_run(out)
    assert isinstance(run, jrnn.Run)
    assert run.config.activation == "linear" and run.config.task == "sine" and run.step == 10
    xs = jax.random.normal(jax.random.PRNGKey(0), (3, 6, 1))
    outputs = run.predict(xs)
    assert outputs.shape == (3, 6, 1)  # many-to-many, from the task
    expected, _ = jrnn.model.apply(run.params, xs, activation="linear", return_sequences=True)
    np.testing.assert_array_equal(outputs, expected)
    lengths = jax.numpy.array([6, 2, 0])
    expected, _ = jrnn.model.apply(
        run.params, xs, activation="linear", return_sequences=True, lengths=lengths
    )
    np.testing.assert_array_equal(run.predict(xs, lengths=lengths), expected)
    batch = run.task.sample(jax.random.PRNGKey(1), 5, 6)
    assert set(run.evaluate(batch)) == {"loss"}


def test_load_run_says_what_the_folder_lacks(tmp_path):
    """Phrased for the library: no CLI option named, the path and what is missing said."""
    cases = {
        tmp_path / "nowhere": "does not exist",
        tmp_path / "file": "is a file, not a run folder",
        tmp_path / "empty": "holds no run (no config.json, no checkpoints): nothing to load",
        tmp_path / "started": "holds a run stopped before its first checkpoint: nothing to load",
        tmp_path / "orphan": "config.json is missing",
    }
    (tmp_path / "file").write_text("x")
    (tmp_path / "empty").mkdir()
    (tmp_path / "started").mkdir()
    (tmp_path / "started" / "config.json").write_text("{}")
    (tmp_path / "orphan" / "checkpoints" / "10").mkdir(parents=True)
    for path, said in cases.items():
        with pytest.raises(CheckpointError) as info:
            jrnn.load_run(path)
        assert said in str(info.value) and "--out" not in str(info.value), str(info.value)
