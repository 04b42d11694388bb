"""What a search leaves behind: ranked trial table, best config, summary, history plot.

The search (:mod:`simkgcl.tuning.search`) imports this module, never the reverse: the result it
hands over (:class:`TuneResult`) and the names of the files are defined here.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from simkgcl.config import Config
from simkgcl.training.checkpoint import atomic_write_bytes
from simkgcl.tuning.space import RUN_SPECIFIC_KEYS

logger = logging.getLogger("simkgcl.tuning")

TRIALS_CSV = "trials.csv"
BEST_YAML = "best.yaml"
SUMMARY_JSON = "summary.json"
HISTORY_PNG = "history.png"


@dataclass
class TuneResult:
    """Outcome of a search (the study may hold trials of earlier sessions and other workers)."""

    study_name: str
    storage: str
    out_dir: Path
    direction: str
    valid_metric: str
    best_trial: int
    best_value: float
    best_params: dict[str, Any]
    best_config: Config
    best_run_dir: Path
    test: dict[str, float]
    rows: list[dict[str, Any]] = field(default_factory=list)
    counts: dict[str, int] = field(default_factory=dict)
    trials_this_session: int = 0


def run_config_dict(config: Mapping[str, Any]) -> dict[str, Any]:
    """The config without the run-specific keys (what best.yaml holds)."""
    return {k: v for k, v in dict(config).items() if k not in RUN_SPECIFIC_KEYS}

_STATE_ORDER = {"complete": 0, "pruned": 1, "running": 2, "waiting": 3, "fail": 4}


def trial_rows(study: Any, param_keys: Sequence[str]) -> list[dict[str, Any]]:
    """One row per trial, ranked: completed trials by validation score, then pruned ones by
    their last reported score, then the rest by number. ``rank`` is set for completed trials."""
    bigger = study.direction.name.lower() == "maximize"
    rows: list[dict[str, Any]] = []
    for t in study.get_trials(deepcopy=False):
        state = t.state.name.lower()
        attrs = t.user_attrs
        values = attrs.get("values") or dict(t.params)
        last = None
        if t.intermediate_values:
            last = t.intermediate_values[max(t.intermediate_values)]
        row: dict[str, Any] = {
            "rank": None,
            "trial": t.number,
            "state": state,
            "valid": t.value if state == "complete" else last,
            "best_epoch": attrs.get("best_epoch"),
            "epochs_run": attrs.get("epochs_run"),
            "pruned_epoch": attrs.get("pruned_epoch"),
            "seconds": attrs.get("seconds"),
        }
        for key in param_keys:
            row[key] = values.get(key)
        row["note"] = "diverged" if attrs.get("diverged") else ""
        row["run_dir"] = attrs.get("run_dir")
        rows.append(row)

    def sort_key(row: dict[str, Any]) -> tuple:
        v = row["valid"]
        has = v is not None and math.isfinite(v)
        score = (-v if bigger else v) if has else math.inf
        return (_STATE_ORDER.get(row["state"], 5), not has, score, row["trial"])

    rows.sort(key=sort_key)
    rank = 0
    for row in rows:
        if row["state"] == "complete":
            rank += 1
            row["rank"] = rank
    return rows


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return f"{value:.4f}" if 1e-3 <= abs(value) < 1e5 or value == 0 else f"{value:.3g}"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return str(value)


def _state_text(row: dict[str, Any]) -> str:
    if row.get("note"):
        return f"{row['state']} ({row['note']})"
    if row["state"] == "pruned" and row.get("pruned_epoch") is not None:
        return f"pruned@{row['pruned_epoch']}"
    return str(row["state"])


def format_trials_table(rows: Sequence[dict[str, Any]], param_keys: Sequence[str],
                        valid_metric: str, limit: int | None = None) -> str:
    """Plain-text ranked table (the first ``limit`` rows)."""
    columns = ["rank", "trial", "state", "valid", "best_epoch", "epochs_run", *param_keys]
    header = [c if c != "valid" else f"valid {valid_metric}" for c in columns]
    shown = list(rows if limit is None else rows[:limit])
    cells = [[_state_text(r) if c == "state" else _cell(r.get(c)) for c in columns]
             for r in shown]
    widths = [max(len(h), *(len(line[i]) for line in cells)) if cells else len(h)
              for i, h in enumerate(header)]
    out = ["  ".join(h.rjust(w) for h, w in zip(header, widths, strict=True))]
    out.append("-" * len(out[0]))
    out += ["  ".join(c.rjust(w) for c, w in zip(line, widths, strict=True)) for line in cells]
    if limit is not None and len(rows) > limit:
        out.append(f"... {len(rows) - limit} more in trials.csv")
    return "\n".join(out)


def rows_to_csv(rows: Sequence[dict[str, Any]]) -> str:
    buf = io.StringIO()
    if not rows:
        return ""
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: json.dumps(v) if isinstance(v, (list, dict)) else
                         ("" if v is None else v) for k, v in row.items()})
    return buf.getvalue()


def best_yaml(result: TuneResult) -> str:
    """The best trial's full config without run-specific keys, ready for ``simkgcl train``."""
    head = (f"# best trial {result.best_trial} of study {result.study_name!r}: "
            f"valid {result.valid_metric} = {result.best_value:.4f}\n"
            f"# searched: {', '.join(f'{k}={v!r}' for k, v in result.best_params.items())}\n"
            f"# use: simkgcl train --config best.yaml\n")
    body = yaml.safe_dump(run_config_dict(result.best_config), sort_keys=True,
                          default_flow_style=None)
    return head + body


def plot_history(rows: Sequence[dict[str, Any]], path: Any, valid_metric: str,
                 bigger: bool) -> bool:
    """Score of every trial and the best so far; False (and a log line) without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        logger.info("matplotlib is not installed: no %s (pip install matplotlib)", path.name)
        return False
    ordered = sorted(rows, key=lambda r: r["trial"])
    fig, ax = plt.subplots(figsize=(7, 4))
    for state, marker in (("complete", "o"), ("pruned", "x")):
        pts = [(r["trial"], r["valid"]) for r in ordered
               if r["state"] == state and r["valid"] is not None]
        if pts:
            ax.scatter(*zip(*pts, strict=True), marker=marker, label=state)
    best: list[tuple[int, float]] = []
    current = None
    for r in ordered:
        if r["state"] == "complete" and r["valid"] is not None:
            v = r["valid"]
            if current is None or (v > current if bigger else v < current):
                current = v
        if current is not None:
            best.append((r["trial"], current))
    if best:
        ax.step(*zip(*best, strict=True), where="post", label="best so far")
    ax.set_xlabel("trial")
    ax.set_ylabel(f"valid {valid_metric}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_reports(study: Any, result: TuneResult) -> None:
    """trials.csv, best.yaml, summary.json and history.png in ``result.out_dir``."""
    keys = list(study.user_attrs.get("space", {}).keys()) or list(result.best_params)
    rows = trial_rows(study, keys)
    result.rows = rows
    counts: dict[str, int] = {}
    for row in rows:
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    result.counts = counts
    out = result.out_dir
    atomic_write_bytes(out / TRIALS_CSV, rows_to_csv(rows).encode())
    atomic_write_bytes(out / BEST_YAML, best_yaml(result).encode())
    summary = {
        "study": result.study_name,
        "storage": result.storage,
        "direction": result.direction,
        "valid_metric": result.valid_metric,
        "trials": counts,
        "best_trial": result.best_trial,
        "best_valid_score": result.best_value,
        "best_params": result.best_params,
        "best_run_dir": str(result.best_run_dir),
        "test_of_best_trial": result.test,
    }
    atomic_write_bytes(out / SUMMARY_JSON, (json.dumps(summary, indent=2) + "\n").encode())
    plot_history(rows, out / HISTORY_PNG, result.valid_metric, result.direction == "maximize")
