"""`python -m jrnn`: the seed example and the gradient-check tables."""

import subprocess
import sys

from jrnn.__main__ import main


def test_main_small_model(capsys):
    assert main(["--batch", "2", "--steps", "5", "--features", "3", "--hidden", "4"]) == 0
    out = capsys.readouterr().out
    assert "[[0.79494228 0.81839002 0.83939649 0.85584174]]" in out
    assert out.count("gradient check, float64") == 2
    assert "xs (2, 5, 3)" in out
    assert "gradient checks passed" in out


def test_check_command_is_the_default(capsys):
    argv = ["--batch", "1", "--steps", "3", "--features", "2", "--hidden", "3"]
    assert main(["check", *argv]) == 0
    checked = capsys.readouterr().out
    assert main(argv) == 0
    assert capsys.readouterr().out == checked


def test_main_rejects_bad_sizes(capsys):
    import pytest

    with pytest.raises(SystemExit):
        main(["--hidden", "0"])
    assert "--hidden must be positive" in capsys.readouterr().err


def test_python_dash_m_runs():
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "jrnn",
            "--batch",
            "1",
            "--steps",
            "3",
            "--features",
            "2",
            "--hidden",
            "3",
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr
    assert "0.79494228" in proc.stdout
