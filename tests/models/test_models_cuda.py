"""The models on CUDA compute what they compute on CPU (run by bench/gpu_check.sh)."""

from __future__ import annotations

import copy

import pytest
import torch

from simkgcl.models import get_model_class
from tests.models.toy_graph import toy_graph

pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

NO_DROPOUT = {"kg_drop_rate": 0.0, "ig_drop_rate": 0.0, "mess_drop_rate": 0.0}
BATCH = ([0, 2, 2, 4, 1], [0, 3, 5, 1, 2], [4, 1, 0, 2, 5])


@pytest.mark.parametrize("name,config", [
    ("bpr", {"embedding_size": 8}),
    ("lightgcn", {"embedding_size": 8, "n_layers": 2}),
    ("simkgcl", {"embedding_size": 8, "kg_view": "fused", **NO_DROPOUT}),
    ("simkgcl", {"embedding_size": 8, "kg_view": "pure", **NO_DROPOUT}),
    ("kgin", {"embedding_size": 8, "node_dropout_rate": 0.0, "ind": "cosine"}),
    ("kgin", {"embedding_size": 8, "node_dropout_rate": 0.0, "ind": "distance"}),
    ("kgin", {"embedding_size": 8, "node_dropout_rate": 0.0, "ind": "mi"}),
    ("mcclk", {"embedding_size": 8, "k": 3, "node_dropout_rate": 0.0,
               "mess_dropout_rate": 0.0}),
    ("sgl", {"embedding_size": 8}),  # its graphs are drawn on the host: the same on both
    ("sgl", {"embedding_size": 8, "type": "rw"}),
    ("simgcl", {"embedding_size": 8, "eps": 0.0}),  # noise is drawn on the device: off
    ("xsimgcl", {"embedding_size": 8, "eps": 0.0}),
    ("kgcl", {"embedding_size": 8, "gat_dropout": 0.0, "graph_drop_rate": 0.0}),
    ("kgcl", {"embedding_size": 8, "gat_dropout": 0.0, "graph_drop_rate": 0.0,
              "ui_augmentation": "random"}),
    ("kgat", {"embedding_size": 8, "kg_embedding_size": 4, "layers": [8, 4],
              "mess_dropout": 0.0}),
    ("kgat", {"embedding_size": 8, "kg_embedding_size": 4, "aggregator_type": "graphsage",
              "mess_dropout": 0.0}),
])
def test_losses_gradients_and_embeddings_match_cpu(name, config):
    torch.manual_seed(3)
    cpu = get_model_class(name)(toy_graph(), config).double()
    gpu = copy.deepcopy(cpu).cuda()
    for model in (cpu, gpu):  # the same per-epoch draws (KGCL's augmented graphs) on both
        model.on_epoch_start(0, torch.Generator().manual_seed(1))
    batch = [torch.tensor(b) for b in BATCH]
    cpu_terms = cpu(*batch)
    gpu_terms = gpu(*(b.cuda() for b in batch))
    assert cpu_terms.keys() == gpu_terms.keys()
    for key in cpu_terms:
        torch.testing.assert_close(gpu_terms[key].cpu(), cpu_terms[key], rtol=1e-6, atol=1e-8)
    sum(cpu_terms.values()).backward()
    sum(gpu_terms.values()).backward()
    for (pname, p_cpu), p_gpu in zip(cpu.named_parameters(), gpu.parameters(), strict=True):
        torch.testing.assert_close(p_gpu.grad.cpu(), p_cpu.grad, rtol=1e-6, atol=1e-8,
                                   msg=f"gradient of {pname}")
    cpu.eval()
    gpu.eval()
    with torch.no_grad():
        for a, b in zip(cpu.final_embeddings(), gpu.final_embeddings(), strict=True):
            torch.testing.assert_close(b.cpu(), a, rtol=1e-6, atol=1e-8)


def test_simkgcl_trains_under_bf16_autocast():
    torch.manual_seed(3)
    model = get_model_class("simkgcl")(toy_graph(), {"embedding_size": 8}).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    batch = [torch.tensor(b, device="cuda") for b in BATCH]
    losses = []
    for _ in range(20):
        opt.zero_grad()
        with torch.autocast("cuda", dtype=torch.bfloat16):
            terms = model(*batch)
        loss = sum(terms.values())
        assert torch.isfinite(loss)
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < losses[0]


def test_models_build_from_a_graph_already_on_the_device():
    for name in ("bpr", "lightgcn", "simkgcl", "kgin", "sgl", "simgcl", "xsimgcl"):
        model = get_model_class(name)(toy_graph().to("cuda"), {"embedding_size": 8}).cuda()
        model.on_epoch_start(0, torch.Generator().manual_seed(1))
        batch = [torch.tensor(b, device="cuda") for b in BATCH]
        assert all(torch.isfinite(t) for t in model(*batch).values())


def test_kgat_attention_update_and_transr_step_match_cpu():
    """KGAT's epoch-1 path on the device: the TransR step, then the attention update (at the
    first training forward) and the propagation on it."""
    torch.manual_seed(3)
    config = {"embedding_size": 8, "kg_embedding_size": 4, "mess_dropout": 0.0}
    cpu = get_model_class("kgat")(toy_graph(), config).double()
    gpu = copy.deepcopy(cpu).cuda()
    for model in (cpu, gpu):
        model.on_epoch_start(1, torch.Generator().manual_seed(1))
    (cpu_step,), (gpu_step,) = cpu.extra_steps(), gpu.extra_steps()
    cpu_kg, gpu_kg = cpu_step(), gpu_step()
    for key in cpu_kg:
        torch.testing.assert_close(gpu_kg[key].cpu(), cpu_kg[key], rtol=1e-6, atol=1e-8)
    batch = [torch.tensor(b) for b in BATCH]
    cpu_terms, gpu_terms = cpu(*batch), gpu(*(b.cuda() for b in batch))
    torch.testing.assert_close(gpu.attention_values.cpu(), cpu.attention_values, rtol=1e-6,
                               atol=1e-8)
    for key in cpu_terms:
        torch.testing.assert_close(gpu_terms[key].cpu(), cpu_terms[key], rtol=1e-6, atol=1e-8)
