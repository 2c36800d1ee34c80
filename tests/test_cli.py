"""``jrnn train``: the run directory, resuming, Ctrl-C, and every way a run can be refused."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import xla_cache_env

import jrnn
from jrnn.__main__ import main as jrnn_main
from jrnn.cli import main
from jrnn.cli.checkpoint import latest_step
from jrnn.cli.runs import load_run

# a constant learning rate: a cosine schedule depends on --steps, which these tests change
SMALL = [
    "--schedule",
    "constant",
    "--seq-len",
    "10",
    "--hidden",
    "8",
    "--batch",
    "8",
    "--log-every",
    "10",
    "--eval-every",
    "20",
    "--checkpoint-every",
    "20",
    "--eval-size",
    "50",
    "--no-progress",
]


def _run(out: Path, *extra: str) -> int:
    return main(["train", *SMALL, "--out", str(out), *extra])


def _digest(directory: Path) -> dict[str, str]:
    return {
        str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.rglob("*"))
        if p.is_file()
    }


def _rows(out: Path) -> list[dict]:
    return [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]


def _assert_same_state(a: Path, b: Path) -> None:
    sa, sb = load_run(a), load_run(b)
    assert sa.step == sb.step
    for x, y in zip(jax.tree.leaves(sa.params), jax.tree.leaves(sb.params), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))  # bit for bit


@pytest.mark.parametrize("every_s, drawn", [(1e9, [40]), (0.0, [20, 40])])
def test_metrics_png_is_redrawn_at_most_every_plot_every_s(tmp_path, monkeypatch, every_s, drawn):
    """A test row redraws the plot only PLOT_EVERY_S after the last drawing (or the run's
    start); the end always draws what it has not drawn yet, once."""
    import jrnn.cli.plot

    steps = []
    figure = jrnn.cli.plot.figure

    def counted(rows, config, step):
        steps.append(step)
        return figure(rows, config, step)

    monkeypatch.setattr(jrnn.cli.plot, "figure", counted)
    monkeypatch.setattr(jrnn.cli.plot, "PLOT_EVERY_S", every_s)
    assert _run(tmp_path / "run", "--steps", "40") == 0  # test rows at 0, 20 and 40
    assert steps == drawn
    assert (tmp_path / "run" / "metrics.png").exists()


@pytest.mark.parametrize("task", ["adding", "copy", "sine", "digits"])
def test_train_writes_the_run(tmp_path, task, capsys):
    extra = ["--task", task, "--steps", "40"]
    if task == "digits":
        extra = ["--task", task, "--steps", "40", "--seq-len", "8"]
    assert _run(tmp_path / "run", *extra) == 0
    out = tmp_path / "run"
    assert {p.name for p in out.iterdir()} == {
        ".lock",
        "checkpoints",
        "config.json",
        "metrics.jsonl",
        "metrics.png",
        "result.json",
    }
    rows = _rows(out)
    assert [r["step"] for r in rows if r["split"] == "train"] == [10, 20, 30, 40]
    assert [r["step"] for r in rows if r["split"] == "test"] == [0, 20, 40]
    classification = task in ("copy", "digits")
    assert all(("accuracy" in r) == classification for r in rows)
    assert all(np.isfinite(r["loss"]) for r in rows)
    assert (out / "metrics.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    result = json.loads((out / "result.json").read_text())
    assert result["step"] == 40 and result["test"]["loss"] == rows[-1]["loss"]
    assert sorted(int(p.name) for p in (out / "checkpoints").iterdir()) == [20, 40]
    config = json.loads((out / "config.json").read_text())
    assert config["task"] == task and config["hidden"] == 8
    run = jrnn.load_run(out)
    assert run.step == 40 and run.config.task == task
    assert run.evaluate() == result["test"]  # exactly: the loaded run needs no option restated
    assert "jrnn train: done, step 40" in capsys.readouterr().out


def test_the_jrnn_command_dispatches_train(tmp_path):
    assert jrnn_main(["train", *SMALL, "--steps", "10", "--out", str(tmp_path / "r")]) == 0
    assert latest_step(tmp_path / "r") == 10


def test_resume_repeats_an_uninterrupted_run(tmp_path):
    assert _run(tmp_path / "full", "--steps", "60") == 0
    assert _run(tmp_path / "split", "--steps", "20") == 0
    assert _run(tmp_path / "split", "--steps", "60", "--resume") == 0
    _assert_same_state(tmp_path / "full", tmp_path / "split")
    full, split = _rows(tmp_path / "full"), _rows(tmp_path / "split")
    strip = lambda rows: [(r["step"], r["split"], r["loss"]) for r in rows]
    assert strip(full) == strip(split)  # the log, too, reads as one run


def _cli(*args: str, **kwargs) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **xla_cache_env()}
    options = {"stdout": subprocess.PIPE, "stderr": subprocess.PIPE, "text": True, "env": env}
    return subprocess.Popen(
        [sys.executable, "-m", "jrnn", "train", *SMALL, *args], **{**options, **kwargs}
    )


def test_ctrl_c_checkpoints_and_resume_matches_an_uninterrupted_run(tmp_path):
    run = tmp_path / "interrupted"
    proc = _cli("--steps", "1000000", "--checkpoint-every", "1000000", "--out", str(run))
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        metrics = run / "metrics.jsonl"
        if metrics.exists() and metrics.read_text().count('"train"') >= 3:
            break
        time.sleep(0.2)
    else:
        proc.kill()
        pytest.fail("the run logged nothing within 120 s: " + proc.communicate()[1])
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr
    assert "interrupted; checkpoint saved at step" in stdout
    step = latest_step(run)
    assert step is not None and step >= 30 and step % 10 == 0
    # resuming at the step reached trains nothing, and tests the params of that step
    same = _cli(
        "--steps", str(step), "--checkpoint-every", "1000000", "--out", str(run), "--resume"
    )
    assert same.wait(timeout=300) == 0
    result = json.loads((run / "result.json").read_text())
    tested = [r for r in _rows(run) if r["split"] == "test"]
    assert result["step"] == step and tested[-1]["step"] == step
    assert result["test"]["loss"] == tested[-1]["loss"] != tested[0]["loss"]
    target = str(step + 20)
    resumed = _cli(
        "--steps", target, "--checkpoint-every", "1000000", "--out", str(run), "--resume"
    )
    reference = _cli(
        "--steps", target, "--checkpoint-every", "1000000", "--out", str(tmp_path / "ref")
    )
    for p in (resumed, reference):
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    _assert_same_state(run, tmp_path / "ref")


def test_an_out_holding_a_run_is_never_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--steps", "20") == 0
    before = _digest(out)
    assert _run(out, "--steps", "20") == 2
    assert "already holds a run (checkpoint at step 20); pass --resume" in capsys.readouterr().err
    assert _run(out, "--steps", "40", "--resume", "--hidden", "16", "--activation", "linear") == 2
    err = capsys.readouterr().err
    assert "incompatible run" in err and "hidden: 8 in the checkpointed run, 16 now" in err
    assert "activation: 'relu' in the checkpointed run, 'linear' now" in err
    assert _digest(out) == before


def test_a_corrupt_checkpoint_is_reported_and_kept(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--steps", "20") == 0
    for p in (out / "checkpoints" / "20").rglob("*"):
        if p.is_file() and p.stat().st_size > 0:
            p.write_bytes(b"not a checkpoint")
    before = _digest(out)
    assert _run(out, "--steps", "40", "--resume") == 2
    err = capsys.readouterr().err
    assert "cannot restore checkpoint" in err and "left as it is" in err
    assert _digest(out) == before


def test_a_checkpoint_of_another_shape_is_reported(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--steps", "20") == 0
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "hidden": 9}))  # lies about its run
    before = _digest(out)
    assert _run(out, "--steps", "40", "--resume", "--hidden", "9") == 2
    assert "cannot restore checkpoint" in capsys.readouterr().err
    assert _digest(out) == before


def test_resume_needs_a_run(tmp_path, capsys):
    assert _run(tmp_path / "empty", "--resume") == 2
    assert "holds no run to resume (no config.json); start one without --resume" in (
        capsys.readouterr().err
    )
    assert main(["train", *SMALL, "--resume"]) == 2
    assert "--resume needs --out" in capsys.readouterr().err
    (tmp_path / "file").write_text("x")
    assert _run(tmp_path / "file") == 2
    assert "is a file, not a directory" in capsys.readouterr().err
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("mine")
    assert _run(tmp_path / "other") == 2
    assert "exists and holds files that are not a jrnn run (notes.txt)" in capsys.readouterr().err


def _interrupted_start(out: Path, *, checkpoint_tmp: bool = True) -> None:
    """What a start stopped before its first checkpoint leaves (a Ctrl-C at set-up, a
    second Ctrl-C, a kill): config.json, the step-0 test row, an empty checkpoints/ or an
    unfinished one, a temporary file of an atomic write, the lock file."""
    assert _run(out, "--steps", "20") == 0
    shutil.rmtree(out / "checkpoints" / "20")
    (out / "result.json").unlink()
    if checkpoint_tmp:
        (out / "checkpoints" / "20.orbax-checkpoint-tmp-1234").mkdir()
    (out / ".config.json.tmp").write_text("{")
    rows = _rows(out)
    (out / "metrics.jsonl").write_text(json.dumps(rows[0]) + "\n")
    assert latest_step(out) is None


def test_a_start_interrupted_before_its_first_checkpoint_never_blocks(tmp_path, capsys):
    """Run again, the same command starts it anew; --resume starts it at step 0 with its
    config; either way what interrupted writes left is gone, and the run is the one an
    uninterrupted start makes, bit for bit."""
    reference = tmp_path / "reference"
    assert _run(reference, "--steps", "20") == 0
    again, resumed = tmp_path / "again", tmp_path / "resumed"
    for out in (again, resumed):
        _interrupted_start(out)
    capsys.readouterr()
    assert _run(again, "--steps", "20") == 0
    assert "stopped before its first checkpoint; starting it anew" in capsys.readouterr().err
    assert main(["train", "--out", str(resumed), "--resume"]) == 0
    for out in (again, resumed):
        assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["20"]
        assert not list(out.glob(".*.tmp"))
        assert [(r["step"], r["split"]) for r in _rows(out)] == [
            (r["step"], r["split"]) for r in _rows(reference)
        ]
        _assert_same_state(out, reference)


def test_a_new_start_cleans_what_an_unfinished_save_left(tmp_path):
    out = tmp_path / "run"
    assert _run(out, "--steps", "20") == 0
    tmp = out / "checkpoints" / "40.orbax-checkpoint-tmp-99"
    tmp.mkdir()
    (out / ".result.json.tmp").write_text("")
    assert _run(out, "--steps", "40", "--resume") == 0
    assert not tmp.exists() and not (out / ".result.json.tmp").exists()
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["20", "40"]


def test_resume_survives_a_cut_metrics_line(tmp_path):
    out = tmp_path / "run"
    assert _run(out, "--steps", "20") == 0
    with (out / "metrics.jsonl").open("a") as f:
        f.write('{"step": 25, "split": "tr')  # a process killed mid-write
    assert _run(out, "--steps", "30", "--resume") == 0
    assert [r["step"] for r in _rows(out) if r["split"] == "train"] == [10, 20, 30]


def test_resume_below_the_checkpoint_step_is_refused(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--steps", "20", "--schedule", "cosine") == 0
    before = _digest(out)
    assert _run(out, "--steps", "10", "--schedule", "cosine", "--resume") == 2
    err = capsys.readouterr().err
    assert "--steps 10 is below the checkpoint's step 20" in err
    assert "warning" not in err  # refused first: no warning about a resume that never runs
    assert _digest(out) == before


def test_resuming_a_finished_run_changes_nothing(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--steps", "20") == 0
    before = _digest(out)
    assert _run(out, "--resume") == 0
    assert "finished at step 20; nothing to do" in capsys.readouterr().out
    assert _digest(out) == before  # no resume recorded, no row, no checkpoint


def test_a_changed_learning_rate_resumes_with_a_warning(tmp_path, capsys):
    out = tmp_path / "run"
    assert _run(out, "--steps", "20") == 0
    assert _run(out, "--steps", "30", "--resume", "--lr", "1e-4") == 0
    assert "warning: resuming with a changed option (lr: 0.001" in capsys.readouterr().err
    config = json.loads((out / "config.json").read_text())
    assert config["lr"] == 1e-4  # the options in effect, with the history of changes
    assert config["resumes"] == [{"step": 20, "changed": {"lr": [0.001, 1e-4], "steps": [20, 30]}}]
    assert _run(out, "--steps", "40", "--resume", "--lr", "1e-4", "--seed", "7") == 0
    err = capsys.readouterr().err
    assert "changed option (seed" not in err  # the key is restored
    assert "changed option (lr" not in err  # warned once, not at every later resume
    assert _run(out, "--steps", "50", "--resume") == 0  # its own options: no --lr needed
    assert "warning" not in capsys.readouterr().err
    assert json.loads((out / "config.json").read_text())["lr"] == 1e-4
    cosine = tmp_path / "cosine"
    assert _run(cosine, "--steps", "20", "--schedule", "cosine") == 0
    assert _run(cosine, "--steps", "30", "--schedule", "cosine", "--resume") == 0
    assert "changed option (steps: 20" in capsys.readouterr().err  # the schedule's length


@pytest.mark.filterwarnings("ignore:overflow encountered in cast:RuntimeWarning")  # lr 1e39
def test_a_non_finite_update_is_never_saved(tmp_path, capsys):
    """The metrics of a step are computed before its update: an update that overflows the
    params in a chunk's last step must still stop the run before the checkpoint."""
    out = tmp_path / "run"
    # lr 1e39 is inf in float32: the first update makes the params inf / NaN
    argv = [
        "--optimizer",
        "sgd",
        "--clip",
        "0",
        "--lr",
        "1e39",
        "--log-every",
        "1",
        "--checkpoint-every",
        "1",
        "--steps",
        "1",
    ]
    assert _run(out, *argv) == 1
    assert "the training loss or params became non-finite at step 1" in capsys.readouterr().out
    assert latest_step(out) is None and not (out / "result.json").exists()
    # lr 1e38: finite params whose test loss overflows are not checkpointed either
    assert _run(tmp_path / "big", *argv[:5], "1e38", *argv[6:]) == 1
    assert "the test loss became non-finite at step 1" in capsys.readouterr().out
    assert latest_step(tmp_path / "big") is None


def test_a_non_finite_loss_stops_and_keeps_the_last_good_checkpoint(tmp_path, capsys):
    out = tmp_path / "run"
    sgd = ["--optimizer", "sgd", "--clip", "0"]
    assert _run(out, *sgd, "--lr", "0.01", "--steps", "20") == 0
    before = _digest(out / "checkpoints")
    assert _run(out, *sgd, "--lr", "1e30", "--steps", "60", "--resume") == 1
    text = capsys.readouterr().out
    assert (
        "loss or params became non-finite at step" in text or "test loss became non-finite" in text
    )
    assert "last good checkpoint (step 20) is kept" in text
    assert latest_step(out) == 20 and _digest(out / "checkpoints") == before
    # from scratch, there is no checkpoint to keep, and none is written
    assert _run(tmp_path / "fresh", *sgd, "--lr", "1e30", "--steps", "60") == 1
    assert "none was saved yet" in capsys.readouterr().out
    assert latest_step(tmp_path / "fresh") is None


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "parity"], "invalid choice: 'parity'"),
        (["--hidden", "0"], "must be positive; got 0"),
        (["--hidden", "-3"], "must be positive; got -3"),
        (["--steps", "ten"], "expected an int; got 'ten'"),
        (["--bias-init", "identity"], "invalid choice: 'identity'"),
        (["--bias-init", "orthogonal"], "invalid choice: 'orthogonal'"),
        (["--lr", "nan"], "must be positive; got nan"),
        (["--clip", "-1"], "must be >= 0; got -1"),
        (["--activation", "sigmoid"], "invalid choice: 'sigmoid'"),
        (["--recurrent-init", "eye"], "invalid choice: 'eye'"),
        (["--optimizer", "lbfgs"], "invalid choice: 'lbfgs'"),
        (["--seed", "18446744073709551616"], "must lie in [0, 2^32)"),
        (["--seed", "-1"], "must lie in [0, 2^32)"),
    ],
)
def test_bad_options_are_refused(tmp_path, capsys, argv, message):
    with pytest.raises(SystemExit) as exit_info:
        main(["train", *argv, "--out", str(tmp_path / "r")])
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--task", "adding", "--seq-len", "1"], "the adding task needs at least 2 steps"),
        (["--task", "digits", "--seq-len", "5"], "the digits task has length 8 only"),
        (["--warmup", "100", "--steps", "100"], "--warmup (100) must be below steps (100)"),
    ],
)
def test_task_option_conflicts_are_refused(tmp_path, capsys, argv, message):
    assert main(["train", *argv, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def _wait_for(predicate, proc: subprocess.Popen, what: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        if proc.poll() is not None:
            pytest.fail(f"the run ended before {what}: {proc.communicate()[1]}")
        time.sleep(0.1)
    proc.kill()
    pytest.fail(f"no {what} within {timeout} s: {proc.communicate()[1]}")


def _trained_rows(run: Path) -> int:
    metrics = run / "metrics.jsonl"
    return metrics.read_text().count('"train"') if metrics.exists() else 0


def test_a_second_ctrl_c_stops_at_once_without_saving(tmp_path):
    run = tmp_path / "run"
    err_path = tmp_path / "stderr"
    with err_path.open("w") as err:
        # a long chunk (--log-every): the second Ctrl-C lands while it runs
        proc = _cli(
            "--steps",
            "1000000",
            "--log-every",
            "100000",
            "--checkpoint-every",
            "1000000",
            "--eval-every",
            "1000000",
            "--out",
            str(run),
            stderr=err,
        )
        try:
            metrics = run / "metrics.jsonl"
            _wait_for(lambda: metrics.exists() and metrics.read_text(), proc, "a first test row")
            proc.send_signal(signal.SIGINT)
            _wait_for(lambda: "Ctrl-C again" in err_path.read_text(), proc, "the first Ctrl-C")
            proc.send_signal(signal.SIGINT)
            stdout, _ = proc.communicate(timeout=120)
        finally:
            proc.kill()
    assert proc.returncode == -signal.SIGINT  # killed by the signal: shells report 130
    assert "stopped without saving" in err_path.read_text()
    assert "checkpoint saved" not in stdout
    assert latest_step(run) is None


def test_a_locked_run_folder_is_refused_and_a_killed_runs_lock_is_not(tmp_path):
    run = tmp_path / "run"
    first = _cli("--steps", "1000000", "--out", str(run))
    try:
        _wait_for(lambda: latest_step(run) is not None, first, "a checkpoint")
        t0 = time.monotonic()
        second = _cli("--steps", "1000000", "--out", str(run), "--resume")
        _, err = second.communicate(timeout=120)
        assert second.returncode == 2, err
        assert f"--out {run} is in use by another jrnn train" in err
        assert "Traceback" not in err
        assert time.monotonic() - t0 < 60  # refused at once, not after a wait
        # without --resume too: the folder is in use, whatever it holds by now
        third = _cli("--steps", "1000000", "--out", str(run))
        _, err = third.communicate(timeout=120)
        assert third.returncode == 2 and f"--out {run} is in use by another jrnn train" in err
    finally:
        first.kill()  # SIGKILL: no clean-up runs, the lock file stays behind
        first.communicate(timeout=60)
    assert (run / ".lock").exists()
    step = latest_step(run)
    assert main(["train", "--out", str(run), "--resume", "--steps", str(step + 10)]) == 0
    assert latest_step(run) == step + 10


def test_a_refused_corrupt_checkpoint_prints_one_line(tmp_path):
    out = tmp_path / "run"
    assert _run(out, "--steps", "20") == 0
    for p in (out / "checkpoints" / "20").rglob("*"):
        if p.is_file() and p.stat().st_size > 0:
            p.write_bytes(b"not a checkpoint")
    proc = _cli("--steps", "40", "--resume", "--out", str(out))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("jrnn train: error: cannot restore"), err


# a child that limits its own file size, then runs ``jrnn`` (or, with ``probe``, writes
# 50 kB): files above 40 kB fail with EFBIG, as writes on a full disk fail with ENOSPC
# (the child sets it on itself: a preexec_fn would fork this multithreaded process)
_LIMITED = """
import os, resource, sys
resource.setrlimit(resource.RLIMIT_FSIZE, (40_000, 40_000))
if sys.argv[1] == "probe":
    try:
        with open(sys.argv[2], "wb") as f:
            f.write(b"x" * 50_000)
    except OSError as err:
        sys.exit(f"errno {err.errno}")
    sys.exit(0)
from jrnn.__main__ import main
sys.exit(main(sys.argv[2:]))
"""


def _limited(*args: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [sys.executable, "-c", _LIMITED, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def _file_size_limit_is_enforced(tmp_path: Path) -> bool:
    import errno

    _, err = _limited("probe", str(tmp_path / "probe")).communicate(timeout=60)
    return f"errno {errno.EFBIG}" in err


def test_a_checkpoint_that_cannot_be_written_is_reported_and_the_last_kept(tmp_path):
    if not _file_size_limit_is_enforced(tmp_path):
        pytest.skip("this kernel does not enforce RLIMIT_FSIZE (see the in-process test below)")
    out = tmp_path / "run"
    # its arrays are well above the 40 kB limit, even compressed (at 128 the checkpoint could
    # be split into files just under it)
    wide = ["--hidden", "256"]
    assert _run(out, *wide, "--steps", "20") == 0
    before = _digest(out / "checkpoints")
    proc = _limited("run", "train", *SMALL, *wide, "--steps", "40", "--resume", "--out", str(out))
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 2, err
    assert "Traceback" not in err and "Event loop" not in err, err
    assert "error: cannot write the checkpoint of step 40" in err
    assert "(File too large); the last good one (step 20) is kept" in err
    assert not list((out / "checkpoints").glob("*orbax-checkpoint-tmp*"))
    assert latest_step(out) == 20 and _digest(out / "checkpoints") == before
    assert jrnn.load_run(out).step == 20


def test_a_failed_checkpoint_write_in_process_leaves_no_temp_folder(tmp_path, capsys, monkeypatch):
    import errno

    import orbax.checkpoint as ocp

    out = tmp_path / "run"
    assert _run(out, "--steps", "20") == 0
    before = _digest(out / "checkpoints")
    real_save = ocp.CheckpointManager.save

    def full_disk(self, step, *args, **kwargs):  # a half-written folder, then ENOSPC
        (out / "checkpoints" / f"{step}.orbax-checkpoint-tmp-1").mkdir()
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(ocp.CheckpointManager, "save", full_disk)
    assert _run(out, "--steps", "40", "--resume") == 2
    err = capsys.readouterr().err
    assert "error: cannot write the checkpoint of step 40" in err
    assert "(No space left on device); the last good one (step 20) is kept" in err
    assert not list((out / "checkpoints").glob("*orbax-checkpoint-tmp*"))
    assert latest_step(out) == 20 and _digest(out / "checkpoints") == before
    monkeypatch.setattr(ocp.CheckpointManager, "save", real_save)
    assert _run(out, "--steps", "40", "--resume") == 0 and latest_step(out) == 40


def test_an_enospc_while_writing_the_run_is_one_line(tmp_path, capsys, monkeypatch):
    import errno

    from jrnn import cli

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), "config.json")

    monkeypatch.setattr(cli.rundir, "write_config", full)
    assert _run(tmp_path / "run", "--steps", "20") == 2
    err = capsys.readouterr().err
    assert "error: cannot write in --out" in err and "No space left on device" in err


def test_an_out_that_cannot_be_created_or_written_is_one_line(tmp_path, capsys, monkeypatch):
    assert main(["train", "--out", "/proc/x/run"]) == 2
    assert "error: cannot create --out /proc/x/run" in capsys.readouterr().err
    import errno

    real_open = os.open

    def read_only(path, *args, **kwargs):  # as root, chmod cannot make a folder read-only
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    assert _run(tmp_path / "ro", "--steps", "10") == 2
    err = capsys.readouterr().err
    assert f"error: cannot write in --out {tmp_path / 'ro'}: Permission denied" in err


def test_progress_lines_when_stderr_is_not_a_terminal(tmp_path, capsys):
    argv = [a for a in SMALL if a != "--no-progress"]
    assert (
        main(["train", *argv, "--task", "copy", "--steps", "20", "--out", str(tmp_path / "r")]) == 0
    )
    captured = capsys.readouterr()
    assert "\r" not in captured.err
    lines = [line for line in captured.err.splitlines() if line.startswith("jrnn train: step")]
    assert [line.split(":")[1] for line in lines] == [" step 10/20", " step 20/20"]
    baseline = f"(baseline {jrnn.tasks.get_task('copy').baseline_accuracy(10):.4g})"
    assert all(baseline in line for line in lines)  # the copy task's blank baseline
    assert baseline in captured.out.splitlines()[-1]  # and in the summary
    result = json.loads((tmp_path / "r" / "result.json").read_text())
    assert result["baseline"]["accuracy"] == jrnn.tasks.get_task("copy").baseline_accuracy(10)


@pytest.mark.parametrize("task", ["sine", "copy"])
def test_the_plot_names_its_loss_and_shows_the_schedule(task):
    from jrnn.cli import figure
    from jrnn.run_config import RunConfig

    config = RunConfig.for_task(task, steps=40, warmup=5)
    rows = [
        {"step": 0, "split": "test", "loss": 1.0, "accuracy": 0.5},
        {"step": 10, "split": "train", "loss": 0.9, "accuracy": 0.6, "lr": 1e-3, "grad_norm": 2.0},
        {"step": 10, "split": "test", "loss": 0.8, "accuracy": 0.7},
    ]
    if task == "sine":
        rows = [{k: v for k, v in r.items() if k != "accuracy"} for r in rows]
    else:
        rows[2]["recall_accuracy"] = 0.4
    fig = figure(rows, config, 10)
    labels = [ax.get_ylabel() for ax in fig.axes]
    loss = "MSE" if task == "sine" else "cross-entropy"
    expected = [
        loss,
        "learning rate",
        "gradient norm (before clipping)",
        "optimiser steps per second",
    ]
    if task == "copy":
        expected[1:1] = ["accuracy", "accuracy on the last 10 steps (recall)"]
    assert labels == expected
    title = fig._suptitle.get_text()
    assert "cosine schedule" in title and "warm-up 5" in title and "step 10 of 40" in title
    if task == "copy":  # the blank baseline on the accuracy panel
        levels = [
            line.get_ydata()[0] for line in fig.axes[1].get_lines() if line.get_linestyle() == "--"
        ]
        assert levels == [pytest.approx(jrnn.tasks.get_task("copy").baseline_accuracy(10))]
        chance = [
            line.get_ydata()[0] for line in fig.axes[2].get_lines() if line.get_linestyle() == "--"
        ]
        assert chance == [pytest.approx(1 / 8)]  # the recall panel: chance, 1/8


def test_impl_pallas_trains_as_the_scan_path_and_refuses_data_parallel(tmp_path, capsys):
    finals = {}
    for impl in ("scan", "pallas"):
        assert _run(tmp_path / impl, "--steps", "20", "--impl", impl) == 0
        finals[impl] = json.loads((tmp_path / impl / "result.json").read_text())["test"]["loss"]
        assert json.loads((tmp_path / impl / "config.json").read_text())["impl"] == impl
    assert abs(finals["pallas"] - finals["scan"]) <= 1e-4 * abs(finals["scan"])
    assert jrnn.load_run(tmp_path / "pallas").evaluate()["loss"] == finals["pallas"]
    assert _run(tmp_path / "dp", "--impl", "pallas", "--data-parallel") == 2
    err = capsys.readouterr().err
    assert (
        "--data-parallel: data parallel training takes impl='pallas' on a mesh of Explicit" in err
    )
    with pytest.raises(SystemExit):
        _run(tmp_path / "bad", "--impl", "cuda")
    assert "--impl: invalid choice: 'cuda' (choose from" in capsys.readouterr().err


# the messages a Ctrl-C may print, by where it lands: outside the loop (one line) or in it
# (the loop's note, then its checkpoint line)
_CTRL_C_LINES = (
    "jrnn train: interrupted before training started; nothing was saved",
    "jrnn train: interrupted; continue with --out ",
    "jrnn train: Ctrl-C: saving a checkpoint after the running chunk",
)


@pytest.fixture
def busy_cpu(request):
    """With ``loaded`` true: a busy process per core beside the test (a loaded
    machine, where the interpreter's start-up and every step take longer)."""
    procs = []
    if request.param:
        procs = [
            subprocess.Popen([sys.executable, "-c", "while True: pass"])
            for _ in range(os.cpu_count() or 2)
        ]
    yield request.param
    for p in procs:
        p.kill()
        p.wait()


def _sigint_default():  # as a terminal's foreground job has it, whatever the test runner's
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.parametrize(
    ("busy_cpu", "delay"),
    [(False, d) for d in (0.15, 1.5, 3.5)] + [(True, d) for d in (0.2, 1.0, 2.5, 5.0)],
    ids=lambda v: (
        {True: "loaded", False: "idle"}.get(v, f"{v}s") if isinstance(v, bool) else f"{v}s"
    ),
    indirect=["busy_cpu"],
)
def test_ctrl_c_at_any_moment_exits_130_and_leaves_a_usable_folder(tmp_path, busy_cpu, delay):
    """SIGINT while jax imports, the folder is set up, the first chunk compiles or trains,
    on an idle and on a loaded CPU: exit 130, one line (two in the loop: its note and the
    checkpoint's), no traceback, no "Exception ignored" and no training to the end; and the
    folder then resumes (or, without a checkpoint, starts anew with the same command). The
    first moment is after the interpreter's own start-up (jrnn._src.interrupts: what no jrnn
    code can change)."""
    out = tmp_path / "run"
    env = {**os.environ, **xla_cache_env()}
    command = [
        sys.executable,
        "-m",
        "jrnn",
        "train",
        *SMALL,
        "--steps",
        "100000",
        "--out",
        str(out),
    ]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        preexec_fn=_sigint_default,
    )
    time.sleep(delay)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=180)
    assert proc.returncode == 130, (stdout, stderr)
    said = [line for line in (stdout + stderr).splitlines() if line.strip()]
    said = [line for line in said if not line.startswith("jrnn train: adding")]  # the title
    assert said and "Traceback" not in stderr and "Exception ignored" not in stderr, said
    if any(line.startswith(_CTRL_C_LINES[2]) for line in said):  # in the loop: it saved
        assert len(said) == 2, said
        assert any("interrupted; checkpoint saved at step" in line for line in said), said
    else:
        assert len(said) == 1 and said[0].startswith(_CTRL_C_LINES[:2]), said
    assert "done, step" not in stdout
    if (out / "config.json").exists():
        steps = str((latest_step(out) or 0) + 20)
        assert main(["train", "--out", str(out), "--resume", "--steps", steps]) == 0
    elif latest_step(out) is None:
        assert main(["train", *SMALL, "--steps", "20", "--out", str(out)]) == 0


def test_a_program_started_with_ctrl_c_ignored_keeps_ignoring_it():
    """nohup, a background job of a script: the parent's choice stands (as Python's own)."""
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jrnn",
            "check",
            "--batch",
            "1",
            "--steps",
            "3",
            "--features",
            "2",
            "--hidden",
            "3",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr
    assert "gradient checks passed" in stdout and "interrupted" not in stderr
