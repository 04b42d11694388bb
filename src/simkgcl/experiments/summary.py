"""What an experiment folder reports, built from its run folders' files alone.

* ``results.csv`` / ``results.json``: one row per (dataset, model, seed) run — status, epochs,
  seconds per epoch, best validation score and every test metric;
* ``summary.json``: per dataset and model, the mean and sample standard deviation (ddof=1) over
  seeds of every test metric, of the epochs run and of the seconds per epoch; the significance
  tests against the baseline (:mod:`simkgcl.experiments.stats`); and the test metrics by user
  group (:mod:`simkgcl.evaluation.groups`), recomputed from the per-user files with one set of
  groups per dataset so every model is cut the same way (fixed edges from the runs' config, and
  quantiles of the baseline runs' users);
* ``summary.md``: the same as tables, one per dataset, the best mean of each column in bold and
  significance stars beside the tested metric.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from simkgcl.config import BASE_SPECS
from simkgcl.errors import ArtifactError
from simkgcl.evaluation.groups import (
    UserGroup,
    group_metrics,
    groups_from_edges,
    quantile_groups,
)
from simkgcl.experiments.collect import RunRecord, read_run
from simkgcl.experiments.runner import locate, run_folder
from simkgcl.experiments.spec import EXPERIMENT_COPY
from simkgcl.experiments.stats import significance
from simkgcl.training.checkpoint import atomic_write_bytes
from simkgcl.training.multiseed import STD_KIND, mean_std

RESULTS_CSV = "results.csv"
RESULTS_JSON = "results.json"
SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


def read_experiment(out_dir: str | Path) -> tuple[dict[str, Any], list[RunRecord], list[dict]]:
    """The experiment stored in ``out_dir``, its runs that exist, and rows for those missing."""
    out = Path(out_dir)
    copy = out / EXPERIMENT_COPY
    if not copy.is_file():
        raise ArtifactError(f"{out}: not an experiment folder (no {EXPERIMENT_COPY})")
    desc = yaml.safe_load(copy.read_text())
    records: list[RunRecord] = []
    missing: list[dict] = []
    for dataset in desc["datasets"]:
        for label in desc["models"]:
            for seed in desc["seeds"]:
                state, run_dir = locate(run_folder(out, dataset, label, seed))
                if run_dir is None or state == "started":
                    missing.append({"dataset": dataset, "model": label, "seed": seed,
                                    "status": "not started"})
                    continue
                records.append(read_run(run_dir, dataset=dataset, label=label))
    return desc, records, missing


def result_rows(records: Sequence[RunRecord], missing: Sequence[dict] = (),
                root: Path | None = None) -> list[dict[str, Any]]:
    """One row per run (finished or not): what ``results.csv`` holds."""
    rows = []
    for run in records:
        res = run.results or {}
        row: dict[str, Any] = {
            "dataset": run.dataset, "model": run.label, "model_name": run.config.get("model"),
            "seed": run.seed, "status": "done" if run.done else "unfinished",
            "epochs_run": res.get("epochs_run", len(run.history)),
            "best_epoch": res.get("best_epoch"), "stop_reason": res.get("stop_reason"),
            "seconds_per_epoch": res.get("seconds_per_epoch"),
            "seconds_per_eval": res.get("seconds_per_eval"),
            f"valid_{run.config.get('valid_metric')}": res.get("best_valid_score"),
        }
        row.update({f"test_{m}": v for m, v in run.test.items()})
        row["run_dir"] = str(run.run_dir.relative_to(root) if root else run.run_dir)
        rows.append(row)
    rows += [dict(m) for m in missing]
    return rows


def rows_to_csv(rows: Sequence[Mapping[str, Any]]) -> str:
    columns: list[str] = []
    for row in rows:
        columns += [c for c in row if c not in columns]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buf.getvalue()


def _by(records: Sequence[RunRecord], *keys: str) -> dict[Any, list[RunRecord]]:
    out: dict[Any, list[RunRecord]] = {}
    for run in records:
        key = tuple(getattr(run, k) for k in keys)
        out.setdefault(key if len(key) > 1 else key[0], []).append(run)
    return out


def model_stats(runs: Sequence[RunRecord]) -> dict[str, Any]:
    """Mean ± sample std over the finished runs (seeds) of one model on one dataset."""
    done = [r for r in runs if r.done]
    out: dict[str, Any] = {"n_runs": len(done), "seeds": [r.seed for r in done]}
    if not done:
        return out
    names = [m for m in done[0].test if all(m in r.test for r in done)]
    out["test"] = {m: mean_std([r.test[m] for r in done]).to_dict() for m in names}
    for key in ("epochs_run", "best_epoch", "seconds_per_epoch"):
        values = [r.results[key] for r in done if r.results and r.results.get(key) is not None]
        out[key] = mean_std(values).to_dict() if values else None
    return out


def dataset_groups(runs: Sequence[RunRecord], reference: str) -> dict[str, list[UserGroup]]:
    """One set of groups per dataset: the runs' fixed edges and the reference model's quantiles."""
    with_users = [r for r in runs if r.done and r.has_per_user]
    if not with_users:
        return {}
    ref = [r for r in with_users if r.label == reference] or with_users
    config = ref[0].config
    out: dict[str, list[UserGroup]] = {}
    edges = config.get("user_groups", BASE_SPECS["user_groups"].default)
    if edges:
        out["edges"] = groups_from_edges(edges)
    q = int(config.get("user_group_quantiles", BASE_SPECS["user_group_quantiles"].default))
    if q >= 2:
        counts = np.concatenate([np.asarray(r.per_user.n_train) for r in ref])
        out["quantiles"] = quantile_groups(counts, q)
    return out


def group_stats(runs: Sequence[RunRecord], groups: Sequence[UserGroup]) -> dict[str, Any]:
    """Per model label: per group, n_users (of the first seed) and each metric's mean ± std."""
    out: dict[str, Any] = {}
    for label, model_runs in _by([r for r in runs if r.done and r.has_per_user],
                                 "label").items():
        per_run = [group_metrics(r.per_user, groups) for r in model_runs]
        rows = []
        for i, group in enumerate(groups):
            cells = [rows_of_run[i] for rows_of_run in per_run]
            names = [m for m in cells[0]["metrics"] if all(m in c["metrics"] for c in cells)]
            rows.append({**group.to_dict(), "n_users": cells[0]["n_users"],
                         "metrics": {m: mean_std([c["metrics"][m] for c in cells]).to_dict()
                                     for m in names}})
        out[label] = rows
    return out


def build_summary(desc: Mapping[str, Any], records: Sequence[RunRecord]) -> dict[str, Any]:
    """``summary.json``: per dataset, model statistics, significance and user groups."""
    baseline = desc.get("baseline")
    metric = desc.get("significance_metric")
    datasets: dict[str, Any] = {}
    for dataset, runs in _by(records, "dataset").items():
        labels = [lb for lb in desc["models"] if any(r.label == lb for r in runs)]
        entry: dict[str, Any] = {"models": {lb: model_stats([r for r in runs if r.label == lb])
                                            for lb in labels}}
        if baseline and metric and any(r.label == baseline and r.done for r in runs):
            entry["significance"] = significance([r for r in runs if r.done], baseline, metric)
        groups = dataset_groups(runs, baseline or labels[0])
        entry["user_groups"] = {kind: {"groups": [g.to_dict() for g in gs],
                                       "models": group_stats(runs, gs)}
                                for kind, gs in groups.items()}
        datasets[dataset] = entry
    return {"name": desc.get("name"), "seeds": desc.get("seeds"), "baseline": baseline,
            "significance_metric": metric, "std": STD_KIND, "datasets": datasets}


# ---------------------------------------------------------------------------------------------
# markdown


def _pm(stats: Mapping[str, Any] | None, digits: int = 4) -> str:
    if not stats:
        return "—"
    std = "" if stats.get("std") is None else f" ± {stats['std']:.{digits}f}"
    return f"{stats['mean']:.{digits}f}{std}"


def _mean(stats: Mapping[str, Any] | None, digits: int) -> str:
    return "—" if not stats else f"{stats['mean']:.{digits}f}"


def _best(values: Mapping[str, float | None]) -> set[str]:
    present = {k: v for k, v in values.items() if v is not None}
    top = max(present.values(), default=None)
    return {k for k, v in present.items() if v == top}


def metric_table(entry: Mapping[str, Any], baseline: str | None,
                 sig: Mapping[str, Any] | None) -> list[list[str]]:
    """Rows (header first) of one dataset's table: mean ± std, best in bold, stars."""
    models = entry["models"]
    metrics: list[str] = []
    for stats in models.values():
        metrics += [m for m in stats.get("test", {}) if m not in metrics]
    best = {m: _best({lb: s.get("test", {}).get(m, {}).get("mean") for lb, s in models.items()})
            for m in metrics}
    tested = (sig or {}).get("models", {})
    rows = [["model", *metrics, "seeds", "epochs run (best), mean", "s/epoch, mean"]]
    for label, stats in models.items():
        cells = []
        for m in metrics:
            text = _pm(stats.get("test", {}).get(m))
            if label in best[m]:
                text = f"**{text}**"
            if sig and m == sig["metric"] and tested.get(label, {}).get("stars"):
                text += " " + tested[label]["stars"].replace("*", "\\*")
            cells.append(text)
        epochs = (f"{_mean(stats.get('epochs_run'), 0)} ({_mean(stats.get('best_epoch'), 0)})"
                  if stats.get("epochs_run") else "—")
        name = f"{label} (baseline)" if label == baseline else label
        rows.append([name, *cells, str(stats["n_runs"]), epochs,
                     _mean(stats.get("seconds_per_epoch"), 2)])
    return rows


def significance_rows(sig: Mapping[str, Any]) -> list[list[str]]:
    def p(v: float | None) -> str:
        return "—" if v is None else f"{v:.2g}"

    rows = [["model", "users", "seeds", f"mean Δ {sig['metric']}", "Wilcoxon p", "Holm",
             "t-test p", "Holm", ""]]
    for label, t in sig["models"].items():
        diff = "—" if t["mean_difference"] is None else f"{t['mean_difference']:+.4f}"
        rows.append([label, str(t["n_users"]), str(len(t["seeds"])), diff, p(t["wilcoxon_p"]),
                     p(t["wilcoxon_p_holm"]), p(t["ttest_p"]), p(t["ttest_p_holm"]),
                     t["stars"].replace("*", "\\*")])
    return rows


def group_rows(groups: Mapping[str, Any], metric: str) -> list[list[str]]:
    models = groups["models"]
    first = next(iter(models.values()), [])
    head = ["model"] + [f"{g['label']} ({g['n_users']})" for g in first]
    best = [_best({lb: rows[i]["metrics"].get(metric, {}).get("mean")
                   for lb, rows in models.items()}) for i in range(len(first))]
    out = [head]
    for label, rows in models.items():
        cells = []
        for i, row in enumerate(rows):
            text = _pm(row["metrics"].get(metric))
            cells.append(f"**{text}**" if label in best[i] and row["metrics"] else text)
        out.append([label, *cells])
    return out


def markdown_table(rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(r) + " |" for r in rows[1:]]
    return "\n".join(lines)


def summary_markdown(summary: Mapping[str, Any]) -> str:
    seeds = ", ".join(str(s) for s in summary.get("seeds") or [])
    out = [f"# Experiment {summary.get('name')}", "",
           f"Test metrics, mean ± {summary['std']} standard deviation over seeds ({seeds}); the "
           "best mean of each column in bold."]
    baseline, metric = summary.get("baseline"), summary.get("significance_metric")
    if baseline and metric:
        out.append(f"Stars beside {metric}: paired per-user Wilcoxon signed-rank test against "
                   f"{baseline} (users' values averaged over the seeds both finished), "
                   "Holm-corrected over the models: \\* p < 0.05, \\*\\* p < 0.01, "
                   "\\*\\*\\* p < 0.001.")
    for dataset, entry in summary["datasets"].items():
        sig = entry.get("significance")
        out += ["", f"## {dataset}", "", markdown_table(metric_table(entry, baseline, sig))]
        if sig:
            out += ["", f"Significance against {baseline} on {sig['metric']}:", "",
                    markdown_table(significance_rows(sig))]
        shown = metric or next(iter(next(iter(entry["models"].values())).get("test", {})), "")
        for kind, groups in entry.get("user_groups", {}).items():
            what = ("fixed groups" if kind == "edges" else "quantile groups")
            out += ["", f"Test {shown} by training interactions ({what}; users per group in "
                    "brackets):", "", markdown_table(group_rows(groups, shown))]
    return "\n".join(out) + "\n"


def write_summary(out_dir: str | Path) -> dict[str, Any]:
    """Write results.csv/json, summary.json and summary.md for an experiment folder."""
    out = Path(out_dir)
    desc, records, missing = read_experiment(out)
    rows = result_rows(records, missing, root=out)
    summary = build_summary(desc, records)
    atomic_write_bytes(out / RESULTS_CSV, rows_to_csv(rows).encode())
    atomic_write_bytes(out / RESULTS_JSON, (json.dumps(rows, indent=2) + "\n").encode())
    atomic_write_bytes(out / SUMMARY_JSON, (json.dumps(summary, indent=2) + "\n").encode())
    atomic_write_bytes(out / SUMMARY_MD, summary_markdown(summary).encode())
    return summary
