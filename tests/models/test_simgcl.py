"""SimGCL and XSimGCL: equality with the plain references (losses, gradients) replaying the
models' own noise draws, the noise itself, and training through the engine."""

from __future__ import annotations

import pytest
import torch

import simkgcl.models.simgcl as simgcl_module
from simkgcl.errors import ConfigError
from simkgcl.models import get_model_class
from tests.models.plaincl_cases import BATCH, assert_close_terms_and_grads, ranks_training_items
from tests.models.reference_simgcl import layers, simgcl_terms, xsimgcl_terms
from tests.models.toy_graph import dense_norm_adjacency, toy_graph

SETTINGS = {"embedding_size": 6, "n_layers": 3, "eps": 0.3, "cl_rate": 0.7, "tau": 0.3,
            "reg_weight": 0.01}


def make(name, **overrides):
    torch.manual_seed(5)
    return get_model_class(name)(toy_graph(), {**SETTINGS, **overrides}).double()


def recorded_directions(monkeypatch) -> list[torch.Tensor]:
    """Every noise direction the models draw, in order."""
    drawn: list[torch.Tensor] = []
    draw = simgcl_module.random_directions

    def spy(shape, dtype, device):
        drawn.append(draw(shape, dtype, device))
        return drawn[-1]

    monkeypatch.setattr(simgcl_module, "random_directions", spy)
    return drawn


def table(model):
    return torch.cat([model.user_embedding.weight, model.item_embedding.weight])


def test_simgcl_matches_plain_reference_on_its_own_noise(monkeypatch):
    model = make("simgcl")
    drawn = recorded_directions(monkeypatch)
    terms = model(*BATCH)
    assert len(drawn) == 6  # two perturbed views of three layers
    ref = simgcl_terms(table(model), dense_norm_adjacency(toy_graph()), 3, 5, BATCH, drawn,
                       0.3, 0.7, 0.3, 0.01)
    params = [model.user_embedding.weight, model.item_embedding.weight]
    assert_close_terms_and_grads(terms, ref, params, {"bpr", "reg", "cl"})


@pytest.mark.parametrize("cl_layer", [0, 1, 3])
def test_xsimgcl_matches_plain_reference_on_its_own_noise(monkeypatch, cl_layer):
    model = make("xsimgcl", cl_layer=cl_layer)
    drawn = recorded_directions(monkeypatch)
    terms = model(*BATCH)
    assert len(drawn) == 3  # one perturbed pass
    ref = xsimgcl_terms(table(model), dense_norm_adjacency(toy_graph()), 3, cl_layer, 5, BATCH,
                        drawn, 0.3, 0.7, 0.3, 0.01)
    params = [model.user_embedding.weight, model.item_embedding.weight]
    assert_close_terms_and_grads(terms, ref, params, {"bpr", "reg", "cl"})


@pytest.mark.parametrize("name", ["simgcl", "xsimgcl"])
def test_scores_are_the_clean_mean_of_layers_one_to_l(name):
    model = make(name)
    model.eval()
    with torch.no_grad():
        users, items = model.final_embeddings()
        clean = layers(table(model), dense_norm_adjacency(toy_graph()), 3)
    expected = sum(clean) / 3  # layer 0 left out, no noise
    torch.testing.assert_close(torch.cat([users, items]), expected, atol=1e-10, rtol=0)


def test_noise_moves_each_row_by_eps_within_its_orthant_fresh_and_reproducibly():
    model = get_model_class("simgcl")(toy_graph(), {"eps": 0.25})
    x = torch.randn(50, 8)
    x[3] = 0.0  # a node without interactions: stays put
    torch.manual_seed(1)
    first = model.perturb(x)
    second = model.perturb(x)
    torch.manual_seed(1)
    again = model.perturb(x)
    assert torch.equal(first, again) and not torch.equal(first, second)
    moved = first - x
    norms = moved.norm(dim=1)
    torch.testing.assert_close(norms[torch.arange(50) != 3], torch.full((49,), 0.25))
    assert torch.count_nonzero(moved[3]) == 0
    assert bool(((moved * x) >= 0).all())  # every entry moves away from zero
    directions = (moved / 0.25).abs()
    assert directions.min() >= 0 and directions.max() <= 1.0
    # over many draws the directions are a normalised U[0,1)^d, whose mean is uniform
    many = simgcl_module.random_directions((20000, 8), torch.float64, torch.device("cpu"))
    assert float(many.mean(0).std()) < 0.005


def test_cl_layer_must_lie_within_the_layers():
    with pytest.raises(ConfigError, match="cl_layer"):
        make("xsimgcl", n_layers=2, cl_layer=3)


@pytest.mark.parametrize("name", ["simgcl", "xsimgcl"])
def test_trains_through_the_engine_and_ranks_training_items_first(name, tmp_path):
    ranks_training_items(name, tmp_path)
