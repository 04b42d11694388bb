"""A run killed with SIGKILL mid-training and resumed ends exactly like an uninterrupted run.

Both the tiny engine model (dropout from the torch generator) and SimKGCL with every random draw
of its own on (triple dropout, 16-bit user-item masks, message dropout): the resumed run must
reproduce the uninterrupted one's epoch losses, validation metrics and test metrics exactly.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

HERE = Path(__file__).parent
SCRIPT = HERE / "resume_script.py"


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(HERE), env.get("PYTHONPATH", "")])
    return env


def _run(*args: str) -> dict:
    out = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                         env=_env(), timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(("model", "delay"), [("tiny", "0.05"), ("simkgcl", "0.1")])
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path: Path, model: str,
                                                       delay: str) -> None:
    reference = _run("run", str(tmp_path / "ref"), "0", model)
    assert reference["epochs_run"] >= 5  # the kill below lands inside the run

    killed_root = tmp_path / "killed"
    proc = subprocess.Popen([sys.executable, str(SCRIPT), "run", str(killed_root), delay, model],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=_env())
    deadline = time.monotonic() + 90
    run_dir = None
    try:
        while time.monotonic() < deadline and proc.poll() is None:
            runs = list(killed_root.glob("*/checkpoints/last.pt")) if killed_root.exists() else []
            if runs:
                metrics = runs[0].parent.parent / "metrics.jsonl"
                if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
                    run_dir = runs[0].parent.parent
                    proc.send_signal(signal.SIGKILL)
                    break
            time.sleep(0.01)
    finally:
        if proc.poll() is None and run_dir is None:
            proc.kill()
        proc.wait(timeout=30)
    assert run_dir is not None, "the child finished or failed before it could be killed"
    assert proc.returncode == -signal.SIGKILL
    assert not (run_dir / "results.json").exists()  # it really died mid-run

    resumed = _run("resume", str(run_dir))
    for key in ("best_valid", "test", "best_epoch", "epochs_run", "history"):
        assert resumed[key] == reference[key], key
