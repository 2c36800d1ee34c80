"""The ``jrnn`` command: subcommands, help, version, and ``jrnn check`` (``python -m jrnn``)."""

import re
import subprocess
import sys

import pytest

import jrnn
from jrnn.__main__ import main


def test_main_small_model(capsys):
    assert main(["check", "--batch", "2", "--steps", "5", "--features", "3", "--hidden", "4"]) == 0
    out = capsys.readouterr().out
    assert "[[0.79494228 0.81839002 0.83939649 0.85584174]]" in out
    assert out.count("gradient check, float64") == 2
    assert "xs (2, 5, 3)" in out
    assert "gradient checks passed" in out


def test_bare_jrnn_prints_the_usage(capsys):
    assert main([]) == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: jrnn") and "commands:" in out


def test_options_without_a_command_are_refused(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--batch", "4"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "jrnn: error: the command comes first: jrnn {train," in err and "--batch 4" in err


def test_main_rejects_bad_sizes(capsys):
    with pytest.raises(SystemExit) as info:
        main(["check", "--hidden", "0"])
    assert info.value.code == 2
    assert "argument --hidden: must be positive; got 0" in capsys.readouterr().err


def test_help_lists_the_commands(capsys):
    with pytest.raises(SystemExit) as info:
        main(["--help"])
    assert info.value.code == 0
    text = capsys.readouterr().out
    assert re.search(r"^\s+train\s+\S", text, re.M) and re.search(r"^\s+check\s+\S", text, re.M)


@pytest.mark.parametrize(("word", "meant"), [("trian", "train"), ("chek", "check"), ("xyz", None)])
def test_a_mistyped_command_gets_did_you_mean_and_the_list(capsys, word, meant):
    with pytest.raises(SystemExit) as info:
        main([word])
    assert info.value.code == 2
    hint = f" (did you mean {meant}?)" if meant else ""
    assert capsys.readouterr().err.splitlines()[0] == (
        f"jrnn: error: unknown command '{word}'{hint}; the commands: train, eval, predict, "
        "launch, check, bench"
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
        capture_output=True,
        text=True,
        timeout=300,
    )
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
    argv = [
        "train",
        "--steps",
        "2",
        "--log-every",
        "1",
        "--eval-size",
        "4",
        "--batch",
        "2",
        "--seq-len",
        "4",
        "--hidden",
        "4",
        "--no-progress",
        "--impl",
        "pallas",
        "--out",
        str(tmp_path / "run"),
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert out.count("--impl pallas on the CPU runs the Pallas kernels in interpret mode") == 1


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["--help"],
        ["--version"],
        ["train", "--help"],
        ["bench", "--help"],
        ["eval", "--help"],
        ["predict", "--help"],
        ["launch", "--help"],
        ["check", "--help"],
        ["trian"],
    ],
    ids=lambda a: " ".join(a) or "bare",
)
def test_help_and_version_import_no_jax(argv):
    """The program's answers that need no computation come at once: jax is never imported
    for them (a timing would be a benchmark; this is what makes them fast)."""
    code = (
        "import sys\n"
        "from jrnn.__main__ import main\n"
        "try:\n"
        f"    main({argv!r})\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('jax', 'jaxlib', 'numpy', 'optax') if m in sys.modules)\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert "HEAVY []" in proc.stderr, proc.stderr


def test_a_closed_pipe_ends_quietly():
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
    )
    assert proc.stdout.readline().startswith(b"seed notebook example")
    proc.stdout.close()  # as `| head -1` does
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 141 and err == b"", err
