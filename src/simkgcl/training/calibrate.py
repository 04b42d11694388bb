"""``simkgcl calibrate RUN_DIR``: fit the popularity blend afresh on a finished run.

The same test phase as the end of ``simkgcl train`` (:func:`run_test_phase`), on the run's best
checkpoint, with its saved config (``popularity_blend`` as saved, unless overridden): the blend
is fitted on validation, tested with and without, and ``results.json``, ``test_per_user.npz``
and the artifact are rewritten (each atomically). Nothing is retrained, so runs made before the
blend existed, or with another β grid, get the current one in seconds; the training record
(``best_valid``, epochs, history) stays as it was.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from simkgcl.training.checkpoint import load_checkpoint
from simkgcl.training.components import build_components, load_data
from simkgcl.training.distributed import resolve_device
from simkgcl.training.run import (
    _load_weights,
    _run_log,
    _write_artifact,
    seed_everything,
    torch_threads,
)
from simkgcl.training.run_folder import RunFolder
from simkgcl.training.test_phase import log_groups, run_test_phase

logger = logging.getLogger("simkgcl.training")

# results.json entries the test phase owns (rewritten; stale ones dropped)
_OWNED = ("test", "test_groups", "test_unblended", "test_groups_unblended", "popularity_blend")


def calibrate_run(run_dir: str | Path, *, overrides: dict[str, Any] | None = None
                  ) -> dict[str, Any]:
    """Refit the blend of ``run_dir`` and rewrite its results; returns the new results."""
    folder = RunFolder(run_dir)
    results = folder.read_results()  # a finished run (its error names the folder otherwise)
    config = folder.read_config(overrides or {})
    device = resolve_device(config["device"])
    with torch_threads(config["threads"]), _run_log(folder, quiet=False):
        seed_everything(config["seed"], config["reproducibility"])
        dataset, split = load_data(config)
        parts = build_components(config, dataset, split, device)
        path = folder.best_or_last_path()
        _load_weights(parts.model, load_checkpoint(path, map_location=device), path)
        logger.info("calibrating %s (weights %s, popularity_blend=%s)", folder.path, path.name,
                    config["popularity_blend"])
        outcome = run_test_phase(config, parts, dataset, split)
        for key in _OWNED:
            results.pop(key, None)
        results["test"] = outcome.test
        if outcome.per_user is not None:
            outcome.per_user.save(folder.per_user_path)
            results["test_groups"] = log_groups(
                outcome.per_user, config, "test (blended)" if outcome.blend else "test")
        results.update(outcome.extra)
        folder.write_results(results)
        _write_artifact(folder, config, dataset, split, parts.model,
                        results.get("best_valid") or {}, outcome.test, outcome.blend)
    return results


__all__ = ["calibrate_run"]
