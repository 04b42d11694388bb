"""`simkgcl report`: one self-contained HTML file, checked as text and as Chromium renders it."""

from __future__ import annotations

import base64
import json
import re
import shutil
from pathlib import Path

import pytest
from chromium import find_chromium, inspect_page

from simkgcl.cli import main
from simkgcl.reporting.html import build_report, write_report
from simkgcl.tuning.report import rows_to_csv

NO_CHROMIUM = ("no Chromium (or no bash to start it) installed: Debian: apt-get install chromium; "
               ".ci/run installs it")
HAS_CHROMIUM = find_chromium() is not None and shutil.which("bash") is not None


def _images(page: str) -> list[bytes]:
    return [base64.b64decode(uri) for uri in
            re.findall(r'<img class="chart" alt="[^"]*" src="data:image/svg\+xml;base64,([^"]+)"',
                       page)]


def _assert_self_contained(page: str) -> None:
    assert "<script" not in page and "<link" not in page and "@import" not in page
    assert not re.search(r'(?:src|href)="(?!data:)', page)  # every resource is inline
    assert "url(" not in page


def test_an_experiment_report_holds_tables_charts_and_settings(tiny_experiment: Path) -> None:
    page = build_report([tiny_experiment])
    _assert_self_contained(page)
    images = _images(page)
    # test-metric bars, learning curves, fixed and quantile user groups
    assert len(images) == 4 and page.count('<img class="chart"') == 4
    assert all(b"<svg" in svg and svg.rstrip().endswith(b"</svg>") for svg in images)
    summary = json.loads((tiny_experiment / "summary.json").read_text())
    stats = summary["datasets"]["tiny"]["models"]["lightgcn"]["test"]["Recall@10"]
    assert f"{stats['mean']:.4f} ± {stats['std']:.4f}" in page
    p = summary["datasets"]["tiny"]["significance"]["models"]["lightgcn"]["wilcoxon_p"]
    assert f"<td>{p:.2g}</td>" in page
    assert "bpr (baseline)" in page and "n_layers" in page  # the key that differs is shown
    assert page.count("<details>") == 4  # every run's full settings


def test_a_single_run_folder_report(tiny_experiment: Path, tmp_path: Path, capsys) -> None:
    run = next((tiny_experiment / "runs" / "tiny" / "bpr" / "seed-1").glob("bpr-*"))
    out = tmp_path / "one.html"
    assert main(["report", str(run), "--out", str(out)]) == 0
    assert f"report: {out}" in capsys.readouterr().out
    page = out.read_text()
    _assert_self_contained(page)
    assert len(_images(page)) == 4
    test = json.loads((run / "results.json").read_text())["test"]
    assert f"{test['NDCG@10']:.4f}" in page and f"Run {run.name}" in page


def _tuning_study(folder: Path) -> Path:
    """A study folder in the format `simkgcl tune` writes (trials.csv via its own writer)."""
    folder.mkdir()
    rows = [{"rank": 1, "trial": 1, "state": "complete", "valid": 0.21, "learning_rate": 0.01},
            {"rank": 2, "trial": 0, "state": "complete", "valid": 0.18, "learning_rate": 0.1},
            {"rank": None, "trial": 2, "state": "pruned", "valid": 0.05, "learning_rate": 1.0}]
    (folder / "trials.csv").write_text(rows_to_csv(rows))
    (folder / "summary.json").write_text(json.dumps({
        "study": "bpr-tiny", "direction": "maximize", "valid_metric": "NDCG@10",
        "trials": {"complete": 2, "pruned": 1}, "best_trial": 1, "best_valid_score": 0.21,
        "best_params": {"learning_rate": 0.01}, "test_of_best_trial": {"NDCG@10": 0.2}}))
    return folder


def test_a_tuning_study_report_shows_the_trial_history(tmp_path: Path) -> None:
    page = build_report([_tuning_study(tmp_path / "tune")])
    _assert_self_contained(page)
    assert len(_images(page)) == 1 and 'alt="trial history"' in page
    assert "Best trial 1" in page and "learning_rate=0.01" in page


def test_a_folder_without_runs_is_a_one_line_error(tmp_path: Path, capsys) -> None:
    assert main(["report", str(tmp_path), "--out", str(tmp_path / "r.html")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "no run folder" in err


@pytest.mark.skipif(not HAS_CHROMIUM, reason=NO_CHROMIUM)
def test_the_report_renders_in_chromium_with_every_chart(tiny_experiment: Path,
                                                         tmp_path: Path) -> None:
    out = write_report([tiny_experiment, _tuning_study(tmp_path / "tune")],
                       tmp_path / "report.html")
    page = inspect_page(out)
    assert page.console_errors == [] and page.exceptions == []
    assert page.failed_requests == []
    assert all(url.startswith(("file:", "data:")) for url in page.requests), page.requests
    assert len(page.images) == 5
    for image in page.images:  # decoded and drawn at a real size
        assert image["complete"] and image["width"] > 300 and image["height"] > 150, image
    assert {i["alt"] for i in page.images} >= {"learning curves on tiny", "trial history",
                                               "test metrics on tiny"}
    assert page.title.startswith("simkgcl report")


@pytest.mark.skipif(not HAS_CHROMIUM, reason=NO_CHROMIUM)
def test_the_chromium_check_notices_a_broken_page(tmp_path: Path) -> None:
    bad = tmp_path / "bad.html"
    bad.write_text('<html><body><img alt="gone" src="missing.png">'
                   '<script>console.error("boom"); undefined_call();</script></body></html>')
    page = inspect_page(bad)
    assert any("boom" in e for e in page.console_errors)
    assert page.exceptions and page.failed_requests
    assert page.images == [{"alt": "gone", "complete": True, "width": 0, "height": 0,
                            "src": (tmp_path / "missing.png").as_uri()[:30]}]

