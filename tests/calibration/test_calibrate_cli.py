"""`simkgcl calibrate`: refitting the blend on a finished run, and removing it, round trip."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parents[1] / "training"))
from engine_fixtures import write_kgcn_folder  # noqa: E402

from simkgcl.artifact import load_artifact  # noqa: E402
from simkgcl.cli import main  # noqa: E402


def test_calibrate_adds_then_removes_the_blend(tmp_path: Path, capsys) -> None:
    data = tmp_path / "tiny"
    write_kgcn_folder(data)
    assert main(["train", "--dataset", str(data), "--model", "bpr", "--json", "epochs=3",
                 "show_progress=false", "topk=[5,10]", "valid_metric=NDCG@10", "device=cpu",
                 f"checkpoint_dir={tmp_path / 'runs'}", "popularity_blend=off"]) == 0
    trained = json.loads(capsys.readouterr().out)
    run = Path(trained["run_dir"])
    assert load_artifact(run).blend is None

    # the run's config says off: calibrate honours it unless the run is re-configured
    assert main(["calibrate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == trained["test"]
    (run / "config.yaml").write_text((run / "config.yaml").read_text()
                                     .replace("popularity_blend: 'off'", "popularity_blend: auto")
                                     .replace("popularity_blend: off", "popularity_blend: auto"))
    assert main(["calibrate", str(run), "--json"]) == 0
    blended = json.loads(capsys.readouterr().out)
    results = json.loads((run / "results.json").read_text())
    assert results["popularity_blend"]["kept"]  # the tiny data gains from it (fixed seed)
    assert results["test_unblended"] == trained["test"]  # the model alone, unchanged
    assert results["best_valid"] == trained["best_valid"]  # training record untouched
    art = load_artifact(run)
    assert art.blend is not None and art.blend.betas == results["popularity_blend"]["betas"]
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == blended  # served = reported

    assert main(["calibrate", str(run), "--off", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == trained["test"]
    assert load_artifact(run).blend is None
    assert json.loads((run / "results.json").read_text())["popularity_blend"] == \
        {"kept": False, "reason": "popularity_blend: off"}
