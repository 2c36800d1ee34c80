"""Multi-process jobs, really run: several ``jrnn train`` processes on 127.0.0.1 joined by
``jax.distributed`` (CPU collectives through gloo), started by ``jrnn launch`` or one by
one as a cluster scheduler would.

Every process is a subprocess bounded in time; the ports are free ports of 127.0.0.1.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import numpy as np
import pytest
from helpers import xla_cache_env

import jrnn
from jrnn import cli, distributed
from jrnn.cli.launch import child_env, free_port, launch

ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONUNBUFFERED": "1", **xla_cache_env()}
ENV.pop("XLA_FLAGS", None)
TRAIN = [
    "--seq-len",
    "10",
    "--hidden",
    "8",
    "--batch",
    "16",
    "--schedule",
    "constant",
    "--no-progress",
]
# the job of the module's fixture: 200 steps, one per chunk (Ctrl-C lands between chunks)
JOB = [
    *TRAIN,
    "--steps",
    "200",
    "--log-every",
    "1",
    "--eval-every",
    "50",
    "--checkpoint-every",
    "100",
]
LIMIT_S = 300


def _launch(*args: str, devices: int = 2, timeout: float = LIMIT_S) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "jrnn",
            "launch",
            "--processes",
            "2",
            "--devices-per-process",
            str(devices),
            "--",
            *args,
        ],
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _start(index: int, port: int, *args: str, processes: int = 2) -> subprocess.Popen:
    """Process ``index`` of a job started by hand, as a cluster scheduler would."""
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jrnn",
            "train",
            *args,
            "--coordinator",
            f"127.0.0.1:{port}",
            "--num-processes",
            str(processes),
            "--process-id",
            str(index),
        ],
        env=child_env(ENV, index, 2),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _params(run_dir: Path) -> list[np.ndarray]:
    return [np.asarray(a) for a in jax.tree.leaves(jrnn.load_run(run_dir).params)]


def _rel(a: list[np.ndarray], b: list[np.ndarray]) -> float:
    return max(float(np.max(np.abs(x - y)) / np.max(np.abs(y))) for x, y in zip(a, b, strict=True))


def _wait_for(path: Path, procs: list, timeout: float = LIMIT_S) -> None:
    end = time.monotonic() + timeout
    while not path.exists():
        assert time.monotonic() < end, f"{path} never appeared"
        assert all(p.poll() is None for p in procs), "a process ended before " + str(path)
        time.sleep(0.05)


@pytest.fixture(scope="module")
def two_by_two(tmp_path_factory) -> tuple[Path, subprocess.CompletedProcess]:
    """A 2-process job (:data:`JOB`), 2 CPU devices each, started by jrnn launch."""
    out = tmp_path_factory.mktemp("job") / "run"
    proc = _launch(*JOB, "--out", str(out))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return out, proc


def test_two_processes_train_as_one_process_with_four_devices(two_by_two, tmp_path):
    out, proc = two_by_two
    one = tmp_path / "one"
    single = subprocess.run(
        [sys.executable, "-m", "jrnn", "train", *JOB, "--data-parallel", "--out", str(one)],
        env={**ENV, "XLA_FLAGS": "--xla_force_host_platform_device_count=4"},
        capture_output=True,
        text=True,
        timeout=LIMIT_S,
    )
    assert single.returncode == 0, single.stderr
    # the same global batch and seed: the same params, up to the all-reduce's rounding
    assert _rel(_params(out), _params(one)) < 1e-5
    # process 0 alone prints and writes: one set of rows, as the single process's
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    single_rows = [json.loads(line) for line in (one / "metrics.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(r["step"], r["split"]) for r in single_rows]
    assert json.loads((out / "result.json").read_text())["step"] == 200
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["100", "200"]
    assert re.search(r"^\[0\] jrnn train: done, step 200", proc.stdout, re.M)
    assert not re.search(r"^\[1\] jrnn train:", proc.stdout, re.M)
    # the collectives' chatter ("[Gloo] Rank 1 is connected to 1 peer ranks...") left out
    assert "[Gloo]" not in proc.stdout + proc.stderr
    assert "process 1 of 2 started (pid" in proc.stdout


def test_ctrl_c_stops_the_job_together_and_it_resumes_bit_for_bit(two_by_two, tmp_path):
    """Ctrl-C to jrnn launch reaches every process; they save one checkpoint together and
    exit 130; the resumed job (every process restores) ends with the params of the
    uninterrupted one, bit for bit."""
    out = tmp_path / "cut"
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jrnn",
            "launch",
            "--processes",
            "2",
            "--devices-per-process",
            "2",
            "--",
            *JOB,
            "--out",
            str(out),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        end = time.monotonic() + LIMIT_S
        while (
            not (out / "metrics.jsonl").exists()
            or len((out / "metrics.jsonl").read_text().splitlines()) < 10
        ):  # training is under way
            assert launcher.poll() is None and time.monotonic() < end, launcher.stdout.read()
            time.sleep(0.05)
        launcher.send_signal(signal.SIGINT)
        text, _ = launcher.communicate(timeout=LIMIT_S)
    finally:
        launcher.kill()
    assert launcher.returncode == 130, text
    saved = sorted(int(p.name) for p in (out / "checkpoints").iterdir())
    assert len(saved) == 1 and 0 < saved[0] < 100, (saved, text)
    assert f"[0] jrnn train: interrupted; checkpoint saved at step {saved[0]}" in text
    resumed = _launch("--no-progress", "--resume", "--out", str(out))
    assert resumed.returncode == 0, resumed.stdout
    assert f"(resumed at step {saved[0]})" in resumed.stdout
    assert [a.tobytes() for a in _params(out)] == [a.tobytes() for a in _params(two_by_two[0])]


def test_a_killed_process_stops_the_others_and_the_checkpoint_stays_loadable(tmp_path):
    """Process 1 of a job started by hand is killed mid-run: process 0 exits non-zero with
    JAX's (or gloo's) message within 60 s (heartbeat timeout 5 s), and the last checkpoint
    loads."""
    out = tmp_path / "run"
    options = [
        *TRAIN,
        "--steps",
        "100000",
        "--log-every",
        "10",
        "--eval-every",
        "100000",
        "--checkpoint-every",
        "20",
        "--heartbeat-timeout",
        "5",
        "--out",
        str(out),
    ]
    port = free_port()
    procs = [_start(i, port, *options) for i in range(2)]
    try:
        _wait_for(out / "checkpoints" / "20", procs)
        procs[1].send_signal(signal.SIGKILL)
        killed_at = time.monotonic()
        _, err = procs[0].communicate(timeout=90)
        waited = time.monotonic() - killed_at
    finally:
        for p in procs:
            p.kill()
            p.communicate()
    assert procs[0].returncode != 0
    assert waited < 60, waited
    # Whichever runtime notices first ends process 0: JAX's coordination service (the
    # heartbeat) or, when process 1 died inside a collective, gloo on the broken connection
    # (seen in CI: "gloo::EnforceNotMet ... Received data size doesn't match expected size")
    assert any(m in err for m in ("another task died", "unhealthy", "gloo::")), err[-3000:]
    run = jrnn.load_run(out)  # the last committed checkpoint, whole
    assert run.step >= 20 and run.step % 20 == 0
    assert all(np.isfinite(a).all() for a in _params(out))


def test_jrnn_launch_reports_a_dead_process_and_stops_the_rest(tmp_path):
    out = tmp_path / "run"
    launcher = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jrnn",
            "launch",
            "--processes",
            "2",
            "--",
            *TRAIN,
            "--steps",
            "100000",
            "--log-every",
            "10",
            "--eval-every",
            "100000",
            "--checkpoint-every",
            "20",
            "--out",
            str(out),
        ],
        env=ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        first = [launcher.stdout.readline() for _ in range(2)]
        pid = int(re.search(r"process 1 of 2 started \(pid (\d+)\)", "".join(first)).group(1))
        _wait_for(out / "checkpoints" / "20", [launcher])
        os.kill(pid, signal.SIGKILL)
        killed_at = time.monotonic()
        text, _ = launcher.communicate(timeout=90)
        waited = time.monotonic() - killed_at
    finally:
        launcher.kill()
    assert launcher.returncode == 128 + signal.SIGKILL, text
    assert "jrnn launch: process 1 was killed by SIGKILL; stopping the others" in text
    assert waited < 30, waited
    assert jrnn.load_run(out).step >= 20


def test_a_slurm_job_is_detected_and_different_options_are_refused(tmp_path):
    """Two processes in a (simulated) Slurm job step, started with no job options: JAX's
    cluster detection joins them; given different --hidden, both refuse before writing."""
    out = tmp_path / "run"
    port = free_port()
    procs = []
    for i, hidden in enumerate(("8", "16")):
        slurm = {
            "SLURM_JOB_ID": "4242",
            "SLURM_STEP_NODELIST": "127.0.0.1",
            "SLURM_NTASKS": "2",
            "SLURM_PROCID": str(i),
            "SLURM_LOCALID": str(i),
            "JAX_COORDINATOR_PORT": str(port),
        }
        procs.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "jrnn",
                    "train",
                    *TRAIN,
                    "--steps",
                    "20",
                    "--hidden",
                    hidden,
                    "--out",
                    str(out),
                ],
                env={**child_env(ENV, i, 2), **slurm},
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
        )
    results = [p.communicate(timeout=LIMIT_S) for p in procs]
    for p, (_, err) in zip(procs, results, strict=True):
        assert p.returncode == 2, err
        assert "were started with different options" in err
        assert "--hidden: 8 on process 0, 16 on process 1" in err
    assert not out.exists()  # refused before anything was written


SHARDED = textwrap.dedent(
    """
    import json, sys
    import jax, numpy as np, optax
    from jrnn import distributed
    distributed.initialize(sys.argv[1], 2, int(sys.argv[2]), heartbeat_timeout_s=10)
    import jrnn
    from jrnn.distributed import batch_mesh, make_sharded_train_step, replicate, shard_batch
    from jrnn.tasks import get_task

    task, pid = get_task("adding"), jax.process_index()
    params = jrnn.init_model(jax.random.PRNGKey(0), 2, 16, 1)
    optimizer = optax.adam(1e-2)
    mesh = batch_mesh()
    step = make_sharded_train_step(optimizer, mesh, loss=task.loss)
    p, s = replicate(params, mesh), replicate(optimizer.init(params), mesh)
    single = jrnn.make_train_step(optimizer, loss=task.loss)
    p1, s1 = params, optimizer.init(params)
    for i in range(5):
        batch = task.sample(jax.random.PRNGKey(i), 16, 20)  # the global batch
        mine = jax.tree.map(lambda a: np.asarray(a)[8 * pid : 8 * pid + 8], batch)
        sharded = shard_batch(mine, mesh)  # this process's 8 rows only
        p, s, m = step(p, s, sharded)
        p1, s1, _ = single(p1, s1, batch)
    rows = sorted((str(d.device), d.index[0].start) for d in sharded.inputs.addressable_shards)

    # jrnn train draws each batch inside the jitted step and constrains it to the mesh: the
    # partitioner leaves each device only its rows to draw (64 / 4 devices = 16)
    @jax.jit
    def draw(key):
        batch = task.sample(key, 64, 100)
        return jax.lax.with_sharding_constraint(batch, distributed.batch_sharding(mesh))

    hlo = draw.lower(jax.random.PRNGKey(0)).compile().as_text()
    err = max(float(np.max(np.abs(np.asarray(a) - np.asarray(b))) / np.max(np.abs(b)))
              for a, b in zip(jax.tree.leaves(p), jax.tree.leaves(p1)))
    print(json.dumps({"err": err, "rows": rows, "gathered": distributed.gather_json(pid),
                      "devices": jax.device_count(), "global_rows": "[64," in hlo,
                      "local_rows": "[16,100" in hlo}))
    """
)


def test_shard_batch_feeds_each_process_its_own_rows():
    """The library path: each process passes its own rows to shard_batch
    (make_array_from_process_local_data); 5 steps equal one device on the whole batch. And
    jrnn train's path, a batch drawn inside jit under the mesh's sharding constraint, leaves
    each device only its own rows to draw (no array of the global batch in the HLO)."""
    port = free_port()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SHARDED, f"127.0.0.1:{port}", str(i)],
            env=child_env(ENV, i, 2),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(2)
    ]
    results = [p.communicate(timeout=LIMIT_S) for p in procs]
    for i, (p, (text, err)) in enumerate(zip(procs, results, strict=True)):
        assert p.returncode == 0, err
        result = json.loads(text.strip().splitlines()[-1])
        assert result["devices"] == 4 and result["gathered"] == [0, 1]
        assert result["local_rows"] and not result["global_rows"]
        assert result["err"] < 1e-5
        # this process holds rows 8i..8i+7 of the global batch of 16, 4 on each device
        assert [start for _, start in result["rows"]] == [8 * i, 8 * i + 4]


# -------------------------------------------------------------------- in one process


def test_gather_json_in_one_process_is_the_value_itself():
    assert distributed.gather_json({"a": [1, 2]}) == [{"a": [1, 2]}]
    assert distributed.cluster_processes() == 1  # no cluster around this test


def test_options_that_differ_between_processes_are_named(monkeypatch):
    seen = [
        {"hidden": 8, "lr": 0.1, "out": "r", "resume": False},
        {"hidden": 16, "lr": 0.1, "out": "s", "resume": False},
    ]
    monkeypatch.setattr(cli.rundir, "gather_json", lambda value: seen)
    with pytest.raises(cli.TrainError) as err:
        cli.rundir.agree({"hidden": 8, "lr": 0.1}, "r", False)
    assert "--hidden: 8 on process 0, 16 on process 1" in str(err.value)
    assert "--out: r on process 0, s on process 1" in str(err.value)
    assert "--lr" not in str(err.value)
    monkeypatch.setattr(cli.rundir, "gather_json", lambda value: [value, value])
    cli.rundir.agree({"hidden": 8}, None, True)  # the same everywhere: no error


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--num-processes", "2", "--process-id", "0"], "needs --coordinator too"),
        (
            ["--coordinator", "127.0.0.1:1", "--num-processes", "2", "--process-id", "2"],
            "--process-id 2 is not below --num-processes 2",
        ),
    ],
)
def test_incomplete_or_wrong_job_options_are_refused(argv, message, tmp_path, capsys):
    assert cli.main(["train", *argv, "--out", str(tmp_path / "r")]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_launch_refuses_bad_arguments(capsys):
    with pytest.raises(ValueError, match="processes must be at least 1; got 0"):
        launch([], 0)
    with pytest.raises(ValueError, match="devices_per_process must be at least 1; got 0"):
        launch([], 2, 0)
    assert cli.main(["launch", "--processes", "2", "--", "--process-id", "1"]) == 2
    assert "jrnn launch sets --coordinator, --num-processes, --process-id itself" in (
        capsys.readouterr().err
    )


def test_each_launched_process_gets_its_own_devices():
    env = child_env({"XLA_FLAGS": "--xla_cpu_foo=1 --xla_force_host_platform_device_count=8"}, 1, 3)
    assert env["XLA_FLAGS"].split() == [
        "--xla_cpu_foo=1",
        "--xla_force_host_platform_device_count=3",
    ]
    assert env["JAX_LOCAL_DEVICE_IDS"] == "3,4,5"
    assert child_env({}, 0, 1)["XLA_FLAGS"] == "--xla_force_host_platform_device_count=1"


def test_num_processes_1_is_a_run_of_its_own_even_in_a_cluster_job(monkeypatch):
    """A sweep of separate runs inside one Slurm step: --num-processes 1 does not join."""
    joined = []
    import jrnn.distributed

    # cli imports them when it joins (jrnn check needs no distributed runtime)
    monkeypatch.setattr(jrnn.distributed, "cluster_processes", lambda: 4)
    monkeypatch.setattr(jrnn.distributed, "initialize", lambda *a, **k: joined.append((a, k)))
    cli.join_job(None, 1, None, 30)
    assert joined == []
    cli.join_job(None, None, None, 30)  # no option: the detected cluster job is joined
    assert joined == [((None, None, None), {"heartbeat_timeout_s": 30})]


def test_the_runtime_chatter_launch_leaves_out():
    """What jrnn launch drops unless --verbose (the job above shows it is dropped)."""
    from jrnn.cli.launch import CHATTER

    chatter = [
        "[Gloo] Rank 0 is connected to 1 peer ranks. Expected number of connected peer ranks is : 1",
        "I1207 02:47:01.123456  1234 coordination_service.cc:12] registered",
    ]
    kept = ["W1207 02:47:01.123456  1234 foo.cc:12] a warning", "jrnn train: done, step 20"]
    assert all(CHATTER.match(line) for line in chatter)
    assert not any(CHATTER.match(line) for line in kept)
