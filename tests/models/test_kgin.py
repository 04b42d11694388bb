"""KGIN: equivalence with the plain reference, the independence losses, configuration."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from simkgcl.config import Config
from simkgcl.errors import ConfigError
from simkgcl.models import get_model_class
from simkgcl.models.ops import independence_loss
from tests.models.equivalence import (
    TIGHT,
    assert_eval_uses_every_triple_unless_sampling,
    assert_every_parameter_learns,
    share_ranking_seen_items_higher,
)
from tests.models.kgin_cases import (
    BATCH,
    assert_terms_and_gradients_close,
    make_model,
    params_of,
    reference_settings,
)
from tests.models.reference_kgin import reference_embeddings, reference_losses
from tests.models.toy_graph import toy_graph

CONFIGS = Path(__file__).resolve().parents[2] / "configs"


@pytest.mark.parametrize(("ind", "hops", "extra_relation_rows"), [
    ("cosine", 2, 2), ("distance", 2, 2), ("mi", 2, 2),
    ("cosine", 1, 0), ("distance", 3, 1), ("mi", 3, 0),
])
def test_fast_model_matches_plain_reference(ind, hops, extra_relation_rows):
    model = make_model(ind=ind, context_hops=hops, extra_relation_rows=extra_relation_rows)
    model.train()  # dropout rates are 0, so training mode must equal the reference exactly
    params = params_of(model)
    ref_users, ref_items = reference_embeddings(toy_graph(), params, hops)
    users, items = model.final_embeddings()
    torch.testing.assert_close(users, ref_users, atol=TIGHT, rtol=0)
    torch.testing.assert_close(items, ref_items, atol=TIGHT, rtol=0)
    terms = model(*BATCH)
    ref_terms = reference_losses(ref_users, ref_items, params, *BATCH,
                                 **reference_settings(model))
    assert_terms_and_gradients_close(terms, ref_terms, params)


def test_every_parameter_receives_a_gradient_from_the_loss():
    assert_every_parameter_learns(make_model(), BATCH)


def test_entities_without_triples_get_zero_hops_and_users_unit_rows():
    """Items 4, 5 and entity 8 have no triples: their hop rows are 0, so their final rows are
    their layer-0 rows; every other hop row is a unit vector."""
    model = make_model(context_hops=1)
    model.eval()
    total, _, _ = model.propagate()
    n_users = model.n_users
    slots = total[n_users:]
    active = model.kg.active_entities.tolist()
    for entity in (4, 5):
        assert torch.count_nonzero(slots[active.index(entity)]) == 0
    assert 8 not in active  # entity 8 shares the zero slot
    assert torch.count_nonzero(slots[-1]) == 0
    norms = slots[[active.index(e) for e in (0, 1, 2, 3, 6, 7, 9)]].norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))
    torch.testing.assert_close(total[:n_users].norm(dim=1), torch.ones(n_users, dtype=norms.dtype))
    _, items = model.final_embeddings()
    torch.testing.assert_close(items[4:6], model.entity_embedding.weight[4:6])


def test_independence_losses_by_hand():
    """Two orthogonal rows and one at 45 degrees: every penalty from its formula."""
    rows = torch.tensor([[1.0, 0.0], [0.0, 2.0], [3.0, 3.0]], dtype=torch.float64)
    # cos^2: (0)^2 + (1/sqrt2)^2 + (1/sqrt2)^2
    assert independence_loss(rows, "cosine").item() == pytest.approx(1.0, abs=1e-12)
    # mi: cosines [[1, 0, c], [0, 1, c], [c, c, 1]], c = 1/sqrt2, tau = 0.5
    c, tau = 1 / math.sqrt(2), 0.5
    want = -(2 * math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 1 + math.exp(c / tau)))
             + math.log(math.exp(1 / tau) / (math.exp(1 / tau) + 2 * math.exp(c / tau))))
    assert independence_loss(rows, "mi", tau).item() == pytest.approx(want, abs=1e-12)
    # distance correlation of 2-channel rows x: a = [[e, s], [s, e]] with e = sqrt(1e-8),
    # s = sqrt(|x0 - x1|^2 + 1e-8); double centring gives A = (s - e)/2 [[-1, 1], [1, -1]], so
    # sum(A_i * A_j) / C^2 = g_i g_j / 4 with g = s - e
    eps = 1e-8
    g = [math.sqrt(d**2 + eps) - math.sqrt(eps) for d in (1.0, 2.0, 0.0)]

    def dcov(i, j):
        return math.sqrt(g[i] * g[j] / 4 + eps)

    want = sum(dcov(i, j) / math.sqrt(dcov(i, i) * dcov(j, j) + eps)
               for i, j in ((0, 1), (0, 2), (1, 2)))
    assert independence_loss(rows, "distance").item() == pytest.approx(want, abs=1e-12)
    assert dcov(0, 1) / math.sqrt(dcov(0, 0) * dcov(1, 1) + eps) == pytest.approx(1.0, abs=1e-6)


def test_distance_correlation_detects_dependence():
    torch.manual_seed(0)
    x = torch.randn(40, dtype=torch.float64)
    independent = torch.stack([x, torch.randn(40, dtype=torch.float64)])
    dependent = torch.stack([x, x**2])  # uncorrelated but dependent
    assert independence_loss(dependent, "distance") > independence_loss(independent, "distance")
    assert independence_loss(torch.stack([x, 3 * x + 1]), "distance").item() == pytest.approx(
        1.0, abs=1e-6)


def test_eval_embeddings_are_deterministic_unless_edge_sampling_in_eval():
    assert_eval_uses_every_triple_unless_sampling(make_model)


def test_bad_config_is_rejected():
    with pytest.raises(ConfigError, match="ind"):
        make_model(ind="orthogonal")
    with pytest.raises(ConfigError, match="node_dropout_rate"):
        make_model(node_dropout_rate=1.5)
    with pytest.raises(ConfigError, match="mess_dropout_rate"):
        make_model(mess_dropout_rate=1.0)
    with pytest.raises(ConfigError, match="extra_relation_rows"):
        make_model(extra_relation_rows=-1)


def test_seed_configuration_is_recboles_defaults():
    config = Config(files=[str(CONFIGS / "kgin.yaml")])
    assert config["model"] == "kgin"
    expected = {"embedding_size": 64, "n_factors": 4, "context_hops": 2,
                "node_dropout_rate": 0.5, "mess_dropout_rate": 0.0, "ind": "cosine",
                "sim_regularity": 1e-4, "reg_weight": 1e-5, "temperature": 0.2,
                "extra_relation_rows": 2, "learning_rate": 1e-3, "train_batch_size": 2048,
                "stopping_step": 10, "stopping_warmup": 0}
    assert {k: config[k] for k in expected} == expected
    model = get_model_class("kgin")(toy_graph(), config)
    r = toy_graph().n_relations
    assert model.relation_embedding.weight.shape == (r + 2, 64)  # RecBole's R + [PAD] + [UI]
    assert model.intent_relation_logits.shape == (4, r + 2)


def test_graph_without_triples_still_trains():
    from dataclasses import replace

    empty = torch.zeros(0, dtype=torch.long)
    graph = replace(toy_graph(), kg_heads=empty, kg_relations=empty, kg_tails=empty)
    model = get_model_class("kgin")(graph, {"embedding_size": 4})
    terms = model(*BATCH)
    sum(terms.values()).backward()
    assert model.user_embedding.weight.grad is not None
    assert all(torch.isfinite(v) for v in terms.values())


def test_trains_through_the_engine_and_ranks_training_items_first(tmp_path):
    """A CPU run of the engine: the loss terms are logged by name, BPR falls, and the saved
    embeddings score each user's training items above the items the user never saw."""
    from simkgcl.training.run import train
    from tests.training.engine_fixtures import make_tiny_data

    cfg = Config(model="kgin", epochs=25, show_progress=False, checkpoint_dir=str(tmp_path),
                 topk=[5, 10], valid_metric="NDCG@10", device="cpu", embedding_size=16,
                 train_batch_size=64, learning_rate=0.01, stopping_step=100, threads=1)
    result = train(cfg, data=make_tiny_data())
    losses = [epoch["losses"] for epoch in result.history]
    assert set(losses[0]) == {"bpr", "reg", "ind"}
    assert losses[-1]["bpr"] < 0.5 * losses[0]["bpr"]
    assert share_ranking_seen_items_higher(result.run_dir) >= 0.9
