"""The command line and the results file shared by ``bench/faithful_{kgin,mcclk,kgat}.py``.

Each of those scripts compares one RecBole 1.2.1 model with ours in a few settings (a loss
variant, a dtype) and records, per setting, ``max |ours - RecBole| / max |RecBole|`` for every
compared quantity (``recbole_bridge.relative_difference``) and the largest of them. What they
share is here: the ``--split`` / ``--out`` options with the default results path
``bench/results/faithful/<model>-<split>.json``, the header of the results, the per-setting
summary line and the JSON file. The comparisons themselves stay in each script.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

METRIC = "max |ours - RecBole| / max |RecBole|"
OUT_DIR = Path(__file__).resolve().parent / "results" / "faithful"


def parse_args(model: str, doc: str | None,
               argv: list[str] | None = None) -> tuple[str, Path]:
    """``(split, out_path)`` from ``--split`` (default lastfm-kg) and ``--out`` (default
    ``bench/results/faithful/<model>-<split>.json``); ``doc``'s first line describes the script."""
    parser = argparse.ArgumentParser(description=(doc or model).splitlines()[0])
    parser.add_argument("--split", default="lastfm-kg")
    parser.add_argument("--out", default=None)
    args = parser.parse_args(argv)
    return args.split, Path(args.out or OUT_DIR / f"{model}-{args.split}.json")


def header(split: str, batch_size: int, **extra: Any) -> dict[str, Any]:
    """The first keys of every results file (``extra`` after the metric)."""
    return {"split": split, "batch_size": batch_size, "metric": METRIC, **extra}


def record_largest(results: dict[str, Any], key: str) -> float:
    """Store and print the largest relative difference of ``results[key]``: every entry except
    the raw loss values (``value_*``) and non-numbers (flags, counts)."""
    entry = results[key]
    worst = max(v for k, v in entry.items()
                if not k.startswith("value_") and isinstance(v, float))
    entry["largest"] = worst
    print(f"{key}: largest relative difference {worst:.3g}")
    return worst


def write_results(results: dict[str, Any], out_path: Path) -> None:
    out_path.parent.mkdir(parents=True, exist_ok=True)
    out_path.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out_path}")
