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


# The pages as a reader sees them: Debian's chromium, headless, on the built site served
# from localhost (skipped where no chromium is installed). JRNN_SCREENSHOTS=DIR keeps the
# screenshots; `python tests/test_docs.py DIR` takes them without pytest.
TOP_PAGES = [
    "",
    "getting-started/",
    "guide/bptt/",
    "guide/training/",
    "guide/layers/",
    "guide/accelerators/",
    "seed/",
    "performance/",
    "api/",
    "api/jrnn/",
    "development/",
]
CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
]


def _build(site: pathlib.Path) -> None:
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--site-dir", str(site)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        timeout=600,
    )


def screenshots(site: pathlib.Path, out: pathlib.Path, chromium: str) -> list[pathlib.Path]:
    """One PNG per top-level page of the built ``site``, 1280 px wide, into ``out``."""
    import functools
    import http.server
    import threading

    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(site))
    handler.log_message = lambda *a: None  # type: ignore[attr-defined]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    shots = []
    try:
        for page in TOP_PAGES:
            png = out / ((page.strip("/").replace("/", "-") or "home") + ".png")
            subprocess.run(
                [
                    chromium,
                    *CHROMIUM_FLAGS,
                    f"--user-data-dir={out / '.profile'}",
                    "--window-size=1280,1600",
                    f"--screenshot={png}",
                    f"http://127.0.0.1:{server.server_port}/{page}",
                ],
                check=True,
                capture_output=True,
                timeout=120,
            )
            shots.append(png)
    finally:
        server.shutdown()
    return shots


def test_the_site_in_a_headless_browser(tmp_path):
    import shutil

    import pytest

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("no chromium (Debian's package chromium) installed")
    site = tmp_path / "site"
    _build(site)
    # offline: nothing fetched from another host when a page is read
    for page in site.rglob("*.html"):
        text = page.read_text()
        assert 'src="http' not in text and 'href="https://fonts' not in text, page
    # the maths is MathML made at build time, no TeX left for a script to render
    bptt = (site / "guide" / "bptt" / "index.html").read_text()
    assert bptt.count("<math") >= 4 and "\\[" not in bptt and "$$" not in bptt
    assert "pre-wrap" in (site / "stylesheets" / "extra.css").read_text()
    out = pathlib.Path(os.environ.get("JRNN_SCREENSHOTS") or tmp_path / "shots")
    out.mkdir(parents=True, exist_ok=True)
    for png in screenshots(site, out, chromium):
        data = png.read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 30_000, png  # a drawn page


if __name__ == "__main__":
    import shutil
    import tempfile

    target = pathlib.Path(sys.argv[1] if len(sys.argv) > 1 else "site-screenshots")
    target.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        _build(pathlib.Path(tmp) / "site")
        browser = shutil.which("chromium") or "chromium"
        for shot in screenshots(pathlib.Path(tmp) / "site", target, browser):
            print(shot)
