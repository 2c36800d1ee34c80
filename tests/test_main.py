"""The ``jrnn`` command: subcommands, help, version, and ``jrnn check`` (``python -m jrnn``)."""

import re
import subprocess
import sys

import pytest

import jrnn
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
    with pytest.raises(SystemExit) as info:
        main(["--hidden", "0"])
    assert info.value.code == 2
    assert "argument --hidden: must be positive; got 0" in capsys.readouterr().err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert re.search(r"^\s+train\s+\S", text, re.M) and re.search(r"^\s+check\s+\S", text, re.M)


def test_a_mistyped_command_gets_the_list(capsys):
    with pytest.raises(SystemExit) as info:
        main(["trian"])
    assert info.value.code == 2
    assert (
        "invalid choice: 'trian' (choose from 'train', 'launch', 'check', 'bench')"
        in capsys.readouterr().err
    )


def test_version(capsys):
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"jrnn {jrnn.__version__}" == "jrnn 0.1.0"


@pytest.mark.parametrize("command", ["train", "check"])
def test_every_option_has_help_and_one_default(capsys, command):
    with pytest.raises(SystemExit):
        main([command, "--help"])
    text = capsys.readouterr().out
    options = text.split("options:")[1]
    entries = re.split(r"\n  (?=-)", options)[1:]
    assert len(entries) > 4
    for entry in entries:
        if entry.startswith("-h"):
            continue
        flag = entry.split()[0]
        assert entry.count("(default:") == 1, entry  # shown once, by us
        assert "(default: None)" not in entry and "(default: True)" not in entry, entry
        assert len(entry.split(None, 1)[1].split("(default:")[0].split()) > 2, flag  # some help
    if command == "train":  # per-task defaults are documented
        assert "digits 128" in text and "copy 10" in text


def test_python_dash_m_runs():
    proc = subprocess.run(
        [sys.executable, "-m", "jrnn", "--batch", "1", "--steps", "3", "--features", "2",
         "--hidden", "3"],
        capture_output=True,
        text=True,
        timeout=300,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "0.79494228" in proc.stdout


def test_a_bad_value_is_one_line_and_a_hint(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--hidden", "x"])
    assert info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [
        "jrnn train: error: argument --hidden: expected an int; got 'x'",
        "  (jrnn train --help lists the options)",
    ]


@pytest.mark.parametrize(
    ("argv", "meant"),
    [
        (["train", "--hiden", "3"], "--hidden"),
        (["train", "--learning-rate", "1e-3"], None),
        (["train", "--seq_len", "5"], "--seq-len"),
        (["check", "--batchs", "2"], "--batch"),
    ],
)
def test_an_unknown_option_is_reported_by_its_command(capsys, argv, meant):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 2 and "usage:" not in lines[0]
    suggestion = f" (did you mean {meant}?)" if meant else ""
    assert lines[0] == (
        f"jrnn {argv[0]}: error: unrecognized arguments: {' '.join(argv[1:])}{suggestion}"
    )
    assert lines[1] == f"  (jrnn {argv[0]} --help lists the options)"


def test_pallas_on_the_cpu_says_it_interprets(tmp_path, capsys):
    argv = ["train", "--steps", "2", "--log-every", "1", "--eval-size", "4", "--batch", "2",
            "--seq-len", "4", "--hidden", "4", "--no-progress", "--impl", "pallas",
            "--out", str(tmp_path / "run")]  # fmt: skip
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("--impl pallas on the CPU runs the Pallas kernels in interpret mode") == 1
