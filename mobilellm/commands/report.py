"""`mobilellm report RESULTS...`: merge host and phone results into report.md, results.csv and plots."""
from __future__ import annotations

from pathlib import Path


def add_arguments(p):
    p.add_argument("results", nargs="+", type=Path, help="results files (schema mobilellm.results/1)")
    p.add_argument("--out", type=Path, default=Path("report"), help="output directory")


def main(ns):
    from mobilellm.benchmarks.report import build_report
    path = build_report(ns.results, ns.out)
    print(f"wrote {path}")
    return 0
