"""Markdown rows for the "at length" tables of docs/results-speech.md.

Usage: python scripts/curve_table.py RUN_DIR [RUN_DIR ...] [--at 10,20,50,100]

For each results folder (its metrics.csv, written epoch by epoch, so unfinished runs work too) and
each E in --at, the test accuracy at the epoch of best training accuracy among the first E epochs
(the trainer's own selection rule, applied to a prefix of the curve), then the same at the last
epoch run, with that epoch's number and training accuracy, the median seconds per epoch of the last
20 epochs, and hidden spikes per neuron / silent fraction in the last epoch.
"""

import argparse
import csv
import sys
from pathlib import Path


def _rows(path: Path) -> list[dict]:
    with open(path / "metrics.csv", newline="") as f:
        return [r for r in csv.DictReader(f)]


def _selected(rows: list[dict], upto: int) -> dict:
    best = None
    for r in rows[:upto]:
        if best is None or float(r["train_accuracy"]) > float(best["train_accuracy"]):
            best = r
    return best


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("runs", nargs="+", type=Path)
    ap.add_argument("--at", default="10,20,30,50,100,200,300", help="comma-separated epoch counts E")
    a = ap.parse_args(argv)
    try:
        at = [int(x) for x in a.at.split(",") if x]
    except ValueError:
        print(f"error: --at wants comma-separated integers, got {a.at!r}", file=sys.stderr)
        return 2
    for run in a.runs:
        if not (run / "metrics.csv").is_file():
            print(f"error: {run} holds no metrics.csv (not a results folder?)", file=sys.stderr)
            return 2
    print("| run | " + " | ".join(f"E = {e}" for e in at) + " | at the last epoch (epoch, train) | s / epoch | hidden spikes / neuron, silent |")
    print("|---|" + "---|" * (len(at) + 3))
    for run in a.runs:
        rows = _rows(run)
        if not rows:
            continue
        n = len(rows)
        cells = [f"{float(_selected(rows, e)['test_accuracy']):.3f}" if e <= n else "" for e in at]
        s = _selected(rows, n)
        secs = sorted(float(r["seconds"]) for r in rows[-20:])
        last = rows[-1]
        rate = last.get("hidden0_rate", "")
        silent = last.get("hidden0_silent", "")
        act = f"{float(rate):.1f}, {100 * float(silent):.0f} %" if rate and silent else ""
        print(f"| {run.name} | " + " | ".join(cells)
              + f" | **{float(s['test_accuracy']):.3f}** (epoch {s['epoch']} of {n}, train {float(s['train_accuracy']):.3f})"
              + f" | {secs[len(secs) // 2]:.1f} | {act} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
