"""Redraws docs/experiments/<run>/metrics.png from each run's own metrics.jsonl and
config.json with today's ``jrnn train`` figure (``jrnn.cli.plot.figure``), so that the
documented curves look as a run's do now. The data are the runs' as they were logged; a
learning rate missing from an older run's rows is the one its config's schedule gives.

Usage: python experiments/redraw.py [docs/experiments]
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path

from jrnn.cli.plot import figure
from jrnn.cli.runs import learning_rate
from jrnn.run_config import RunConfig


def redraw(run: Path) -> Path:
    saved = json.loads((run / "config.json").read_text())
    known = {f.name for f in dataclasses.fields(RunConfig)}
    config = RunConfig.from_dict({k: v for k, v in saved.items() if k in known})
    schedule = learning_rate(config)
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    for row in rows:
        if row["split"] == "train" and "lr" not in row:
            row["lr"] = float(schedule(row["step"] - 1))
    out = run / "metrics.png"
    figure(rows, config, max(r["step"] for r in rows)).savefig(out, dpi=110)
    return out


def main(argv: list[str]) -> int:
    root = Path(argv[0] if argv else Path(__file__).parents[1] / "docs" / "experiments")
    for run in sorted(p for p in root.iterdir() if (p / "metrics.jsonl").is_file()):
        print(redraw(run))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
