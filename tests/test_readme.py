"""The Python blocks of the README and of the documentation run as written, and the
README's set-up commands match .ci/run.

Every ```python block runs: each page's blocks in order in one namespace (a page reads
as one script), in a fresh folder. Blocks marked as another language (bash, text) are
not run. A page whose blocks are word for word another's (the quickstart, in the README
and on the Getting started page) runs once.
"""

import pathlib
import re
import textwrap

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
FENCE = re.compile(r"^( *)```python\n(.*?)^\1```", flags=re.S | re.M)


def python_blocks(page: pathlib.Path) -> list[str]:
    return [textwrap.dedent(body) for _, body in FENCE.findall(page.read_text())]


def name(page: pathlib.Path) -> str:
    return page.relative_to(ROOT).as_posix()


def pages_to_run() -> list[pathlib.Path]:
    """The pages with Python blocks, less those whose blocks an earlier page has."""
    seen, pages = set(), []
    for page in PAGES:
        blocks = tuple(python_blocks(page))
        if blocks and blocks not in seen:
            seen.add(blocks)
            pages.append(page)
    return pages


def test_readme_quickstart_is_the_getting_started_one():
    readme = python_blocks(ROOT / "README.md")
    assert readme, "the README has a quickstart"
    assert readme == python_blocks(ROOT / "docs" / "getting-started.md")


@pytest.mark.parametrize("page", pages_to_run(), ids=name)
def test_python_blocks_run(page, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    namespace = {"__name__": "__docs__"}
    for i, block in enumerate(python_blocks(page)):
        exec(compile(block, f"{name(page)} (python block {i + 1})", "exec"), namespace)


def test_ci_runs_the_readme_test_command():
    readme = (ROOT / "README.md").read_text()
    ci = (ROOT / ".ci" / "run").read_text()
    command = "python -m pip install -e '.[test]' && python -m pytest"
    assert command in readme
    assert command in ci
    main_job = "python -m pip install -e '.[train]' && jrnn train"
    assert main_job in readme  # the set-up's main job, on the defaults
