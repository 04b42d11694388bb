"""The engine on CUDA: samples and graph live on the device; results agree with CPU."""

from __future__ import annotations

import pytest
import torch
from engine_fixtures import TINY_MODEL, make_tiny_data

import simkgcl.models as registry
from simkgcl.config import Config
from simkgcl.sampling import NegativeSampler
from simkgcl.training.run import evaluate_run, train

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]


def test_epoch_samples_are_on_the_device_and_equal_to_cpu() -> None:
    _, split = make_tiny_data()
    kw = dict(batch_size=32, seed=3)
    cpu = NegativeSampler(split.train.users, split.train.items, 30, device="cpu", **kw).epoch(1)
    gpu = NegativeSampler(split.train.users, split.train.items, 30, device="cuda", **kw).epoch(1)
    assert gpu.users.is_cuda and gpu.neg_items.is_cuda
    assert torch.equal(gpu.neg_items.cpu(), cpu.neg_items)


def test_cuda_run_matches_cpu_run_and_evaluate_reproduces(tmp_path, monkeypatch) -> None:
    monkeypatch.setitem(registry._MODELS, TINY_MODEL, ("engine_fixtures", "TinyMF"))
    data = make_tiny_data()
    common = dict(model=TINY_MODEL, epochs=3, show_progress=False, topk=[5, 10],
                  valid_metric="NDCG@10", dropout=0.0, checkpoint_dir=str(tmp_path))
    on_gpu = train(Config(device="cuda", **common), data=data)
    on_cpu = train(Config(device="cpu", **common), data=data)
    assert on_gpu.test == pytest.approx(on_cpu.test, abs=1e-4)
    assert evaluate_run(on_gpu.run_dir, data=data) == on_gpu.test
