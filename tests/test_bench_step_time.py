"""bench/step_cpu_time.py runs on the bundled dataset and reports positive CPU times per step."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "step_cpu_time.py"


def test_step_cpu_time_reports_each_round(capsys):
    spec = importlib.util.spec_from_file_location("bench_step_cpu_time", SCRIPT)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    threads = torch.get_num_threads()
    try:
        module.main(["--dataset", "lastfm-kg", "--batch", "64", "--steps", "2", "--rounds", "3",
                     "embedding_size=8", "n_layers=1"])
    finally:
        torch.set_num_threads(threads)  # the script sets the process's threads
    line = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"simkgcl lastfm-kg: CPU s/step best (\S+), rounds (.+) \(1 thread\(s\)\)",
                         line)
    assert match, line
    rounds = [float(x) for x in match.group(2).split(", ")]
    assert len(rounds) == 3 and all(r > 0 for r in rounds)
    assert float(match.group(1)) == min(rounds)
