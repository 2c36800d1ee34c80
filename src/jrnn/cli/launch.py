"""``jrnn launch``: one multi-process ``jrnn train`` job on this machine.

It starts ``N`` processes of ``python -m jrnn train <options> --coordinator
127.0.0.1:<free port> --num-processes N --process-id i``, each with ``K`` devices of its
own, and then:

* prints their output, each line prefixed with ``[i]``, less the runtime's chatter (Gloo's
  "Rank N is connected" lines, XLA's info-level log lines) unless ``verbose``;
* forwards Ctrl-C to all of them (the processes run in their own session, so the terminal's
  Ctrl-C reaches the launcher alone): the job saves a checkpoint and stops together, and a
  second Ctrl-C (or SIGTERM, SIGHUP to the launcher) kills it without saving;
* exits with the first failure's status (``128 + n`` for a process killed by signal
  ``n``), after killing the rest within ``grace_s`` (60 s after a Ctrl-C, while the job
  saves): a job whose process died cannot go on, and a process waiting in a collective
  for a dead peer would never return. The coordinator binds 127.0.0.1 only.

It is for trying a multi-process job on one machine (CPU devices through
``--xla_force_host_platform_device_count``; on a machine with GPUs process ``i`` gets GPUs
``i*K`` to ``i*K + K - 1`` through ``JAX_LOCAL_DEVICE_IDS``). On a cluster, start ``jrnn
train`` on every host with the scheduler instead (docs/guide/distributed.md, "Several
processes and hosts").
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Sequence
from typing import Any, TextIO

__all__ = ["CHATTER", "JOB_OPTIONS", "child_env", "free_port", "launch"]

# the options jrnn launch sets for each process; given among the train options they clash
JOB_OPTIONS = ("--coordinator", "--num-processes", "--process-id")
_DEVICE_COUNT = re.compile(r"--xla_force_host_platform_device_count=\S*")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (the coordinator binds it a moment later)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def child_env(base: dict[str, str], index: int, devices_per_process: int) -> dict[str, str]:
    """Process ``index``'s environment: ``devices_per_process`` CPU devices (replacing any
    device count in ``XLA_FLAGS``), its own GPUs if there are any, unbuffered output."""
    flags = _DEVICE_COUNT.sub("", base.get("XLA_FLAGS", "")).split()
    flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
    first = index * devices_per_process
    ids = ",".join(str(d) for d in range(first, first + devices_per_process))
    return {
        **base,
        "XLA_FLAGS": " ".join(flags),
        "JAX_LOCAL_DEVICE_IDS": ids,
        "PYTHONUNBUFFERED": "1",
    }


def _status(code: int) -> int:
    """A shell's exit status for a child's return code (``-n``: killed by signal ``n``)."""
    return 128 - code if code < 0 else code


def _describe(code: int) -> str:
    if code < 0:
        try:
            return f"was killed by {signal.Signals(-code).name}"
        except ValueError:
            return f"was killed by signal {-code}"
    return f"exited with status {code}"


# the collectives' and XLA's info lines: "[Gloo] Rank 1 is connected to 1 peer ranks...",
# "I1207 02:47:01.123456  1234 file.cc:12] ..."
CHATTER = re.compile(r"^(\[Gloo\] |I\d{4} \d\d:\d\d:\d\d\.\d+ +\d+ )")


def _pump(
    index: int, pipe: TextIO, out: TextIO, lock: threading.Lock, verbose: bool = False
) -> None:
    """Copies a child's lines to ``out`` with its prefix, less :data:`CHATTER` unless
    ``verbose``; keeps draining the pipe when ``out`` fails (``jrnn launch ... | head``), or
    the child would block on a full pipe."""
    for line in pipe:
        if not verbose and CHATTER.match(line):
            continue
        with lock, contextlib.suppress(OSError, ValueError):
            out.write(f"[{index}] {line}" if line.endswith("\n") else f"[{index}] {line}\n")
            out.flush()


def launch(
    train_args: Sequence[str],
    processes: int,
    devices_per_process: int = 1,
    *,
    port: int | None = None,
    grace_s: float = 10.0,
    out: TextIO | None = None,
    verbose: bool = False,
) -> int:
    """Runs ``jrnn train <train_args>`` as one job of ``processes`` local processes.

    Args:
        train_args: ``jrnn train``'s options, the same for every process.
        processes: how many processes (``>= 1``).
        devices_per_process: CPU devices (or GPUs) of each process.
        port: the coordinator's port on 127.0.0.1 (default: a free one).
        grace_s: after a process fails, how long the others get to stop by themselves
            before they are killed.
        out: where the prefixed output goes (default ``sys.stdout``).
        verbose: pass the runtime's chatter (:data:`CHATTER`) through too.

    Returns:
        0 if every process finished; else the first failure's exit status.

    Raises:
        ValueError: ``processes`` or ``devices_per_process`` below 1, or ``train_args``
            holding an option the launcher sets itself.
    """
    out = sys.stdout if out is None else out
    if processes < 1:
        raise ValueError(f"processes must be at least 1; got {processes}")
    if devices_per_process < 1:
        raise ValueError(f"devices_per_process must be at least 1; got {devices_per_process}")
    clash = [a for a in train_args if a.split("=", 1)[0] in JOB_OPTIONS]
    if clash:
        raise ValueError(f"jrnn launch sets {', '.join(JOB_OPTIONS)} itself; got {clash[0]}")
    address = f"127.0.0.1:{free_port() if port is None else port}"
    job = _Job(out, verbose)
    with _signals_to(job.on_signal):
        try:
            for i in range(processes):
                command = [
                    sys.executable,
                    "-m",
                    "jrnn",
                    "train",
                    *train_args,
                    "--coordinator",
                    address,
                    "--num-processes",
                    str(processes),
                    "--process-id",
                    str(i),
                ]
                env = child_env(dict(os.environ), i, devices_per_process)
                env["JAX_COORDINATOR_BIND_ADDRESS"] = address  # this machine only
                pid = job.start(i, command, env)
                job.say(f"process {i} of {processes} started (pid {pid}), coordinator {address}")
            status = _supervise(job, grace_s)
        finally:
            job.close()  # never leave a process behind (an exception here, say)
    stopped = [s for s in job.signals if s != signal.SIGINT]
    if stopped:
        return 128 + stopped[0]
    return 128 + signal.SIGINT if job.signals.count(signal.SIGINT) > 1 else status


class _Job:
    """The launched processes, the threads that pump their output, and the signals the
    launcher was sent (in order)."""

    def __init__(self, out: TextIO, verbose: bool):
        self.out, self.verbose = out, verbose
        self.lock = threading.Lock()
        self.children: list[subprocess.Popen] = []
        self.pumps: list[threading.Thread] = []
        self.signals: list[int] = []

    def say(self, line: str) -> None:
        with self.lock:
            print(f"jrnn launch: {line}", file=self.out, flush=True)

    def start(self, i: int, command: list[str], env: dict[str, str]) -> int:
        """Starts process ``i`` and the thread that prefixes its output; its pid."""
        child = subprocess.Popen(
            command,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            text=True,
            errors="replace",
            bufsize=1,
            start_new_session=True,
        )
        self.children.append(child)
        pump = threading.Thread(
            target=_pump, args=(i, child.stdout, self.out, self.lock, self.verbose), daemon=True
        )
        pump.start()
        self.pumps.append(pump)
        return child.pid

    def on_signal(self, signum: int, frame: object) -> None:
        """The first Ctrl-C goes on to every process (the job saves a checkpoint and stops
        together); a second one, SIGTERM or SIGHUP stops them now, without saving."""
        self.signals.append(signum)
        if signum == signal.SIGINT and self.signals.count(signal.SIGINT) == 1:
            for child in self.children:
                if child.poll() is None:
                    with contextlib.suppress(ProcessLookupError):
                        child.send_signal(signal.SIGINT)
        else:
            _stop(self.children)

    def close(self) -> None:
        """Kills what still runs, waits for every process and its output."""
        _stop(self.children)
        for child in self.children:
            child.wait()
        for pump in self.pumps:
            pump.join(timeout=5)


@contextlib.contextmanager
def _signals_to(handler: Any) -> Iterator[None]:
    """SIGINT, SIGTERM and SIGHUP go to ``handler`` inside the block; their handlers are
    restored after it. Off the main thread, where signals are the caller's business,
    nothing changes."""
    previous = {}
    try:
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            previous[signum] = signal.signal(signum, handler)
    except ValueError:  # not the main thread
        previous = {}
    try:
        yield
    finally:
        for signum, old in previous.items():
            signal.signal(signum, old)


def _supervise(job: _Job, grace_s: float, saving_s: float = 60.0) -> int:
    """Waits for the job's processes. On the first failure the others get ``grace_s`` to stop by
    themselves (``saving_s`` after a Ctrl-C, when they save a checkpoint together), then
    are killed: a process stuck in a collective whose peer has gone never returns."""
    first: tuple[int, int] | None = None
    deadline = None
    codes: list[int | None] = []
    while True:
        codes = [c.poll() for c in job.children]
        if all(code is not None for code in codes):
            break
        for i, code in enumerate(codes):
            if code not in (None, 0) and first is None:
                first = (i, code)
                interrupted = signal.SIGINT in job.signals
                deadline = time.monotonic() + (saving_s if interrupted else grace_s)
                if not interrupted:
                    job.say(f"process {i} {_describe(code)}; stopping the others")
        if deadline is not None and time.monotonic() > deadline:
            _stop(job.children)
            deadline = None
        time.sleep(0.05)
    if first is None:
        failed = [(i, code) for i, code in enumerate(codes) if code]
        first = failed[0] if failed else None
    return 0 if first is None else _status(first[1])


def _stop(children: list[subprocess.Popen]) -> None:
    """SIGKILL to the children still running (SIGTERM would not do: JAX's preemption
    notifier catches it in a multi-process job)."""
    for child in children:
        if child.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                child.kill()
