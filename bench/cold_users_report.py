"""Issue 17's table from finished run folders: test NDCG@20 per user group (training interactions)
of the model alone, "most popular" and the model with the popularity blend, means over seeds,
and the issue's Done-when checks.

    python bench/cold_users_report.py --pop runs/cold/lastfm-kg/pop-* \
        --model runs/cold/lastfm-kg/simkgcl-*

Reads ``results.json`` only (``test``, ``test_unblended``, ``test_groups``,
``test_groups_unblended``, ``popularity_blend``). A run whose blend was not kept serves the model
alone: its "blended" figures are the model's. Prints Markdown.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

METRIC = "NDCG@20"


def _load(run: Path) -> dict[str, Any]:
    return json.loads((run / "results.json").read_text(encoding="utf-8"))


def _groups(results: dict[str, Any], key: str) -> dict[str, tuple[int, float | None]]:
    rows = results.get(key) or results["test_groups"]
    return {r["label"]: (r["n_users"], r["metrics"].get(METRIC)) for r in rows["edges"]}


def _mean(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return sum(real) / len(real) if real else None


def _fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.4f}"


def report(pop_run: Path, model_runs: list[Path]) -> tuple[str, bool]:
    pop = _load(pop_run)
    runs = [_load(r) for r in model_runs]
    pop_groups = _groups(pop, "test_groups")
    model_groups = [_groups(r, "test_groups_unblended") for r in runs]
    blend_groups = [_groups(r, "test_groups") for r in runs]
    lines = [f"| training items | users | model {METRIC} | pop {METRIC} | blended {METRIC} | "
             "β per seed |", "|---|---|---|---|---|---|"]
    checks: list[tuple[str, bool]] = []
    for label, (n, pop_value) in pop_groups.items():
        if n == 0:
            continue
        model = _mean([g[label][1] for g in model_groups])
        blended = _mean([g[label][1] for g in blend_groups])
        betas = []
        for r in runs:
            table = r.get("popularity_blend", {})
            by_label = {g["label"]: b for g, b in zip(table.get("groups", []),
                                                      table.get("betas", []), strict=False)}
            betas.append(f"{by_label[label]:g}" if label in by_label else "off")
        lines.append(f"| {label} | {n} | {_fmt(model)} | {_fmt(pop_value)} | {_fmt(blended)} | "
                     f"{', '.join(betas)} |")
        lo = pop_groups[label]
        if label in ("≤1",) and pop_value is not None and blended is not None:
            checks.append((f"group {label}: blended ≥ pop", blended >= pop_value))
        first = label.lstrip("≤>").split("–")[0]
        if first.isdigit() and int(first) > 10 and lo[0] and model:
            checks.append((f"group {label}: blended loses ≤ 1% vs model "
                           f"({(blended or 0) / model - 1:+.2%})",
                           (blended or 0) >= 0.99 * model))
    overall = []
    for name in (METRIC, "Recall@20"):
        model = _mean([r.get("test_unblended", r["test"])[name] for r in runs])
        blended = _mean([r["test"][name] for r in runs])
        popv = pop["test"][name]
        overall.append(f"| all ({name}) | {_fmt(model)} | {_fmt(popv)} | {_fmt(blended)} |")
        checks.append((f"overall {name}: blended ≥ model and ≥ pop",
                       blended is not None and model is not None and blended >= model
                       and blended >= popv))
    text = "\n".join(lines) + "\n\n| overall | model | pop | blended |\n|---|---|---|---|\n"
    text += "\n".join(overall) + f"\n\nseeds: {len(runs)}\n\n"
    text += "\n".join(f"- [{'x' if ok else ' '}] {what}" for what, ok in checks)
    return text, all(ok for _, ok in checks)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--pop", type=Path, required=True, help="run folder of --model pop")
    parser.add_argument("--model", type=Path, nargs="+", required=True,
                        help="run folders of the model, one per seed")
    args = parser.parse_args(argv)
    try:
        text, _ = report(args.pop, args.model)
    except (OSError, ValueError, KeyError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
