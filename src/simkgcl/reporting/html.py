"""``simkgcl report``: one self-contained HTML file for run, experiment and tuning folders.

Each input path becomes a part of the page, recognised by its files:

* an experiment folder of ``simkgcl compare`` (``experiment.yaml``): per dataset the summary
  table (mean ± std over seeds, best in bold, significance stars), the significance tests, a bar
  chart of the test metrics with the seeds' standard deviation as error bars, learning curves
  (every loss term and the validation metric per epoch, a line per model, the seeds' min–max as
  a band) and the test metric by user group; then every run's settings;
* a tuning study of ``simkgcl tune`` (``trials.csv`` + ``summary.json``): the trial history chart,
  the best trial and the ranked trials;
* anything else: the run folders found in it (one run folder, a ``--seeds`` folder, a folder of
  runs), grouped by dataset and model like an experiment without a baseline.

The file needs nothing else to display: charts are inlined SVG images (:mod:`.charts`), styles
are inline, there is no script and no external font, link or request.
"""

from __future__ import annotations

import csv
import html
import json
import re
from collections.abc import Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

from simkgcl import __version__
from simkgcl.errors import ArtifactError
from simkgcl.experiments.collect import RunRecord, find_run_dirs, read_run
from simkgcl.experiments.runner import IGNORED_KEYS
from simkgcl.experiments.spec import EXPERIMENT_COPY
from simkgcl.experiments.summary import (
    build_summary,
    group_rows,
    metric_table,
    read_experiment,
    significance_rows,
)
from simkgcl.reporting import charts
from simkgcl.training.checkpoint import atomic_write_bytes

STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",sans-serif;margin:0 auto;max-width:1200px;
padding:1rem 2rem;color:#222;line-height:1.4}
h1{font-size:1.6rem}h2{border-bottom:2px solid #ddd;padding-bottom:.2rem;margin-top:2.5rem}
h3{margin-top:1.8rem}table{border-collapse:collapse;margin:.6rem 0;font-size:.85rem}
th,td{border:1px solid #ddd;padding:.25rem .5rem;text-align:right;white-space:nowrap}
th{background:#f4f4f4}td:first-child,th:first-child{text-align:left}
figure{margin:1rem 0}figcaption{font-size:.85rem;color:#555}img.chart{max-width:100%;height:auto}
.note{color:#555;font-size:.9rem}pre{background:#f8f8f8;padding:.6rem;font-size:.8rem;
overflow:auto}details{margin:.3rem 0}summary{cursor:pointer}.scroll{overflow-x:auto}
"""
TRIAL_ROWS = 20


def _esc(value: Any) -> str:
    return html.escape(str(value))


def _cell(text: str) -> str:
    """A table cell written for markdown (``**bold**``, ``\\*``) as HTML."""
    out = _esc(text).replace("\\*", "\0")
    out = re.sub(r"\*\*(.+?)\*\*", r"<b>\1</b>", out)
    return out.replace("\0", "*")


def table(rows: Sequence[Sequence[Any]], cls: str = "") -> str:
    head = "".join(f"<th>{_cell(str(c))}</th>" for c in rows[0])
    body = "".join("<tr>" + "".join(f"<td>{_cell(str(c))}</td>" for c in row) + "</tr>"
                   for row in rows[1:])
    return (f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
            f"<tbody>{body}</tbody></table></div>")


def figure(uri: str | None, alt: str, caption: str) -> str:
    if uri is None:
        return f'<p class="note">{_esc(alt)}: nothing to draw yet.</p>'
    return (f'<figure><img class="chart" alt="{_esc(alt)}" src="{uri}">'
            f"<figcaption>{_esc(caption)}</figcaption></figure>")


# ---------------------------------------------------------------------------------------------
# comparisons (experiments and plain run folders)


def _colours(labels: Sequence[str]) -> dict[str, str]:
    return {label: charts.colour(i) for i, label in enumerate(labels)}


def _dataset_html(dataset: str, entry: Mapping[str, Any], runs: Sequence[RunRecord],
                  baseline: str | None, group_metric: str | None,
                  colours: Mapping[str, str]) -> str:
    sig = entry.get("significance")
    parts = [f"<h3>{_esc(dataset)}</h3>", table(metric_table(entry, baseline, sig))]
    if sig:
        parts += [f'<p class="note">Paired per-user tests against {_esc(baseline)} on '
                  f"{_esc(sig['metric'])} (users' values averaged over the seeds both finished; "
                  "Holm-corrected over the models).</p>", table(significance_rows(sig))]
    models = entry["models"]
    metrics: list[str] = []
    for stats in models.values():
        metrics += [m for m in stats.get("test", {}) if m not in metrics]
    if metrics:
        series = {lb: [_mean_std(s.get("test", {}).get(m)) for m in metrics]
                  for lb, s in models.items() if s.get("test")}
        parts.append(figure(charts.grouped_bars(metrics, series, colours, "test"),
                            f"test metrics on {dataset}",
                            "Test metrics: mean over seeds, error bars one standard deviation."))
    histories = {lb: [r.history for r in runs if r.label == lb] for lb in models}
    valid_metric = next((r.config.get("valid_metric") for r in runs), "NDCG@20")
    parts.append(figure(charts.learning_curves(histories, valid_metric, colours),
                        f"learning curves on {dataset}",
                        "Learning curves: every loss term and the validation metric per epoch; "
                        "line = mean over seeds, band = min–max over seeds."))
    for kind, groups in entry.get("user_groups", {}).items():
        metric = group_metric or valid_metric
        rows = group_rows(groups, metric)
        first = next(iter(groups["models"].values()), [])
        categories = [f"{g['label']}\n({g['n_users']})" for g in first]
        series = {lb: [_mean_std(g["metrics"].get(metric)) for g in model_rows]
                  for lb, model_rows in groups["models"].items()}
        what = "fixed groups" if kind == "edges" else "quantile groups"
        parts += [figure(charts.grouped_bars(categories, series, colours, f"test {metric}",
                                             "training interactions (users)"),
                         f"test {metric} by user group ({what}) on {dataset}",
                         f"Test {metric} by the users' number of training interactions "
                         f"({what}; users per group in brackets): mean over seeds, error bars "
                         "one standard deviation."), table(rows)]
    return "\n".join(parts)


def _mean_std(stats: Mapping[str, Any] | None) -> tuple[float, float]:
    if not stats:
        return 0.0, 0.0
    return float(stats["mean"]), float(stats.get("std") or 0.0)


def _settings_html(runs: Sequence[RunRecord]) -> str:
    """Keys whose values differ between runs, then each run's full config."""
    keys = sorted({k for r in runs for k in r.config} - IGNORED_KEYS - {"seed"})
    differing = [k for k in keys if len({json.dumps(r.config.get(k), sort_keys=True)
                                         for r in runs}) > 1]
    parts = ["<h3>Settings</h3>"]
    if len(runs) > 1 and differing:
        rows = [["run", *differing]]
        rows += [[f"{r.dataset}/{r.label}/seed {r.seed}",
                  *[_short(r.config.get(k)) for k in differing]] for r in runs]
        parts += ['<p class="note">Keys that differ between runs (all others are shared):</p>',
                  table(rows)]
    for r in runs:
        parts.append(f"<details><summary>{_esc(r.dataset)} / {_esc(r.label)} / seed {r.seed} — "
                     f"{_esc(r.run_dir)}</summary><pre>"
                     f"{_esc(yaml.safe_dump(r.config, sort_keys=True))}</pre></details>")
    return "\n".join(parts)


def _short(value: Any) -> str:
    text = "—" if value is None else (json.dumps(value) if isinstance(value, (list, dict))
                                      else str(value))
    return text if len(text) <= 40 else text[:37] + "..."


def _comparison_html(title: str, note: str, desc: Mapping[str, Any],
                     records: Sequence[RunRecord]) -> str:
    summary = build_summary(desc, records)
    labels = list(desc["models"])
    colours = _colours(labels)
    parts = [f"<h2>{_esc(title)}</h2>", f'<p class="note">{_esc(note)}</p>']
    for dataset, entry in summary["datasets"].items():
        runs = [r for r in records if r.dataset == dataset]
        parts.append(_dataset_html(dataset, entry, runs, summary.get("baseline"),
                                   summary.get("significance_metric"), colours))
    parts.append(_settings_html(records))
    return "\n".join(parts)


def experiment_part(path: Path) -> str:
    desc, records, missing = read_experiment(path)
    done = sum(r.done for r in records)
    note = (f"{path}: {len(records) + len(missing)} runs ({done} finished, "
            f"{len(records) - done} unfinished, {len(missing)} not started); seeds "
            f"{', '.join(map(str, desc['seeds']))}; std = sample standard deviation over seeds.")
    return _comparison_html(f"Experiment {desc['name']}", note, desc, records)


def runs_part(path: Path) -> str:
    run_dirs = find_run_dirs(path)
    if not run_dirs:
        raise ArtifactError(f"{path}: no run folder, experiment folder or tuning study found")
    records = [read_run(d) for d in run_dirs]
    seen: dict[tuple[str, str, int], int] = {}
    for r in records:  # two runs of one model and seed are different settings, not seeds
        key = (r.dataset, r.label, r.seed)
        seen[key] = seen.get(key, 0) + 1
    for r in records:
        if seen[r.dataset, r.label, r.seed] > 1:
            r.label = f"{r.label} ({r.run_dir.name})"
    labels = list(dict.fromkeys(r.label for r in records))
    desc = {"name": path.name, "models": labels, "seeds": sorted({r.seed for r in records})}
    done = sum(r.done for r in records)
    note = f"{path}: {len(records)} run folder(s), {done} finished."
    title = "Run " + run_dirs[0].name if len(run_dirs) == 1 else f"Runs in {path.name}"
    return _comparison_html(title, note, desc, records)


# ---------------------------------------------------------------------------------------------
# tuning studies


def _number(text: str) -> Any:
    if text == "":
        return None
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            continue
    return text


def tuning_part(path: Path) -> str:
    summary = json.loads((path / "summary.json").read_text())
    with open(path / "trials.csv", newline="") as fh:
        rows = [{k: _number(v) for k, v in row.items()} for row in csv.DictReader(fh)]
    metric = summary.get("valid_metric", "valid")
    bigger = summary.get("direction", "maximize") == "maximize"
    parts = [f"<h2>Tuning study {_esc(summary.get('study'))}</h2>",
             f'<p class="note">{_esc(path)}: trials {_esc(summary.get("trials"))}; objective '
             f"valid {_esc(metric)} ({'maximised' if bigger else 'minimised'}).</p>"]
    parts.append(figure(charts.trial_history(rows, metric, bigger), "trial history",
                        f"Validation {metric} of every trial (pruned trials at their last "
                        "report) and the best so far."))
    best = summary.get("best_params") or {}
    parts.append(f"<p>Best trial {_esc(summary.get('best_trial'))}: valid {_esc(metric)} = "
                 f"{_esc(summary.get('best_valid_score'))} with "
                 + ", ".join(f"{_esc(k)}={_esc(v)}" for k, v in best.items()) + "</p>")
    test = summary.get("test_of_best_trial") or {}
    if test:
        parts.append(table([["test metric of the best trial", "value"],
                            *[[k, f"{v:.4f}"] for k, v in test.items()]]))
    if rows:
        columns = [c for c in rows[0] if c != "run_dir"]
        shown = [[_short(r.get(c)) if not isinstance(r.get(c), float) else f"{r[c]:.4g}"
                  for c in columns] for r in rows[:TRIAL_ROWS]]
        parts += [f'<p class="note">Trials, ranked ({min(len(rows), TRIAL_ROWS)} of '
                  f"{len(rows)} shown; all in trials.csv):</p>", table([columns, *shown])]
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------


def part_for(path: Path) -> str:
    """The report part for one input path (kind recognised from its files)."""
    if not path.exists():
        raise ArtifactError(f"{path}: not found")
    if (path / EXPERIMENT_COPY).is_file():
        return experiment_part(path)
    if (path / "trials.csv").is_file() and (path / "summary.json").is_file():
        return tuning_part(path)
    return runs_part(path)


def build_report(paths: Sequence[str | Path], title: str | None = None) -> str:
    """The whole HTML page for ``paths``."""
    charts.require_matplotlib()
    inputs = [Path(p) for p in paths]
    body = "\n".join(part_for(p) for p in inputs)
    heading = title or "simkgcl report: " + ", ".join(p.name or str(p) for p in inputs)
    stamp = datetime.now().strftime("%Y-%m-%d %H:%M")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{_esc(heading)}</title><style>{STYLE}</style></head><body>"
            f"<h1>{_esc(heading)}</h1><p class=\"note\">Written {stamp} by simkgcl "
            f"{__version__}. Self-contained: opens without a network.</p>\n{body}\n"
            "</body></html>\n")


def write_report(paths: Sequence[str | Path], out: str | Path,
                 title: str | None = None) -> Path:
    target = Path(out)
    target.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(target, build_report(paths, title).encode("utf-8"))
    return target
