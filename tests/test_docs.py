"""The documentation site builds with ``mkdocs build --strict``: every page, link and
docstring, with the API reference generated from the sources."""

import inspect
import os
import pathlib
import subprocess
import sys

import jrnn

ROOT = pathlib.Path(__file__).resolve().parents[1]


def test_mkdocs_build_strict(tmp_path):
    site = tmp_path / "site"
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr

    # every page under docs/ became a page of the site
    for page in (ROOT / "docs").rglob("*.md"):
        rel = page.relative_to(ROOT / "docs").with_suffix("")
        folder = rel.parent if rel.name == "index" else rel
        assert (site / folder / "index.html").is_file(), f"{page} was not built"

    # the API reference, from the docstrings: jrnn.rnn's entry and its summary line
    api = (site / "api" / "jrnn" / "index.html").read_text()
    assert 'id="jrnn.rnn"' in api
    summary = inspect.getdoc(jrnn.rnn).splitlines()[0]
    assert summary.split("`")[-1].strip() in api  # "whose reverse-mode derivative is ..."
    assert ":func:" not in api  # the reST roles became Markdown

    # the benchmark results are included from benchmarks/, not copied
    results = (site / "performance" / "results" / "index.html").read_text()
    rows = (ROOT / "benchmarks" / "RESULTS.md").read_text().splitlines()
    first_shape = next(row for row in rows if row.startswith("| (")).split("|")[1].strip()
    assert first_shape in results

    # nothing is loaded from the internet when the site is read (no web fonts)
    assert "fonts.googleapis.com" not in (site / "index.html").read_text()
