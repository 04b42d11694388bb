"""``simkgcl report``: one self-contained HTML file for run, experiment and tuning folders."""

from __future__ import annotations

import argparse


def _report(args: argparse.Namespace) -> int:
    from simkgcl.reporting.html import write_report

    path = write_report(args.paths, args.out, title=args.title)
    print(f"report: {path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="write one self-contained HTML report of run, experiment or tuning folders",
        description="Write one HTML file (no network needed to view it) with the summary "
        "tables, a bar chart of the test metrics, learning curves (loss terms and validation "
        "metric per epoch, seeds as bands), the test metric by user group and every run's "
        "settings; for a tuning study, the trial history. Each path may be a run folder, a "
        "folder of runs (e.g. --seeds output), an experiment folder of simkgcl compare or a "
        "tuning study of simkgcl tune. Needs matplotlib (and scipy for significance): "
        "pip install 'simkgcl[report]'.",
    )
    p.add_argument("paths", nargs="+", metavar="RUN_OR_EXPERIMENT_DIR")
    p.add_argument("--out", default="report.html", metavar="FILE",
                   help="HTML file to write (default report.html)")
    p.add_argument("--title", help="page title (default: the folders' names)")
    p.set_defaults(func=_report)
