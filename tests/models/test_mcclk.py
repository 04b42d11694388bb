"""MCCLK: equivalence with the plain reference, the counted GRACE form, the kNN graph's
refresh schedule, dropout draws, configuration and a run through the engine."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

from simkgcl.config import Config
from simkgcl.errors import ConfigError
from simkgcl.models import get_model_class
from simkgcl.models.ops import (
    fixed_width_matmul,
    grace_loss,
    knn_select,
    mixed_knn_graph,
    normalized_knn_values,
)
from tests.models.equivalence import (
    TIGHT,
    assert_eval_uses_every_triple_unless_sampling,
    assert_every_parameter_learns,
    assert_seeded_forward_repeats,
    assert_terms_and_gradients_close,
    share_ranking_seen_items_higher,
)
from tests.models.reference_mcclk import knn_matrix, one_way, reference_losses, reference_views
from tests.models.toy_graph import toy_graph

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
NO_DROPOUT = {"node_dropout_rate": 0.0, "mess_dropout_rate": 0.0}
BATCH = (
    torch.tensor([0, 2, 2, 4, 1, 0]),
    torch.tensor([0, 3, 5, 1, 2, 0]),
    torch.tensor([4, 1, 0, 2, 5, 4]),
)  # repeated users and items: the counted GRACE must equal the per-row one


def make_model(**overrides):
    """MCCLK on the toy graph in float64, dropout off unless overridden; the weak terms'
    weights are raised so that their gradients are far above the comparison's tolerance."""
    torch.manual_seed(7)
    config = {"embedding_size": 6, "k": 3, "reg_weight": 0.1, "beta": 0.7, **NO_DROPOUT,
              **overrides}
    model = get_model_class("mcclk")(toy_graph(), config).double()
    with torch.no_grad():  # larger rows: attention far from uniform
        model.relation_embedding.weight.mul_(2.0)
        model.entity_embedding.weight.mul_(2.0)
    return model


def params_of(model) -> dict[str, torch.Tensor]:
    params = {"user": model.user_embedding.weight, "entity": model.entity_embedding.weight,
              "relation": model.relation_embedding.weight}
    for head in ("fc1", "fc2", "fc3"):
        for name, weight in getattr(model, head).named_parameters():
            params[f"{head}.{name}"] = weight
    return params


def settings_of(model) -> dict:
    keys = ("n_hops", "lightgcn_layer", "item_agg_layer", "k", "lambda_coeff", "alpha", "beta",
            "temperature", "reg_weight", "build_graph_separately", "loss_type")
    return {key: getattr(model, key) for key in keys}


@pytest.mark.parametrize("overrides", [
    {},
    {"build_graph_separately": False},
    {"n_hops": 1, "lightgcn_layer": 3, "item_agg_layer": 2, "k": 4},
    {"n_hops": 3, "loss_type": "bce", "extra_relation_rows": 0, "lambda_coeff": 0.2},
    {"temperature": 0.01},  # the logsumexp form of the contrastive losses
])
def test_fast_model_matches_plain_reference(overrides):
    model = make_model(**overrides)
    model.train()  # dropout rates are 0: training mode must equal the reference exactly
    params = params_of(model)
    cfg = settings_of(model)
    ref_views = reference_views(toy_graph(), params, cfg)
    views = model.views()
    for name, got, want in zip(("u_s", "e_s", "u_c", "i_c", "i_m"), views, ref_views,
                               strict=True):
        if name == "i_m":  # the semantic view is read (and built) at the items only
            want = want[: model.n_items]
        torch.testing.assert_close(got, want, atol=TIGHT, rtol=0, msg=lambda m, n=name: f"{n}: {m}")
    terms = model(*BATCH)
    ref_terms = reference_losses(ref_views, params, *BATCH, cfg)
    assert_terms_and_gradients_close(terms, ref_terms, params)


def test_final_embeddings_concatenate_the_views():
    model = make_model()
    model.eval()
    users_s, entities_s, users_c, items_c, semantic = model.views()
    users, items = model.final_embeddings()
    n = model.n_items
    torch.testing.assert_close(users, torch.cat([users_s, users_c], 1), atol=0, rtol=0)
    assert semantic.shape[0] == n
    torch.testing.assert_close(items, torch.cat([entities_s[:n], semantic + items_c], 1),
                               atol=0, rtol=0)


def test_knn_graph_by_hand():
    """Four rows in the plane, k = 2: each row's own cosine (1) and its nearest other row."""
    x = torch.tensor([[1.0, 0.0], [1.0, 1.0], [0.2, 2.0], [-1.0, 0.1]], dtype=torch.float64)
    cosines, index = knn_select(x, 2, block=3)  # two blocks of rows
    assert index.tolist() == [[0, 1], [1, 2], [2, 1], [3, 2]]
    c01 = 1 / 2**0.5
    c12 = 2.2 / (2**0.5 * 4.04**0.5)
    torch.testing.assert_close(cosines, torch.tensor(
        [[1, c01], [1, c12], [1, c12], [1, 0.0]], dtype=torch.float64))
    d = [1 + c01, 1 + c12, 1 + c12, 1.0]
    want = torch.tensor([[1 / d[0], c01 / (d[0] * d[1]) ** 0.5], [1 / d[1], c12 / d[1]],
                         [1 / d[2], c12 / d[1]], [1.0, 0.0]], dtype=torch.float64)
    values = normalized_knn_values(cosines, index)
    torch.testing.assert_close(values, want)
    dense = torch.zeros(4, 4, dtype=torch.float64).scatter_(1, index, values)
    torch.testing.assert_close(dense, knn_matrix(x, 2))


def test_blocked_knn_graph_equals_the_dense_one():
    """Slabs of 7 rows (the last one short) against the reference's full sort of every row."""
    torch.manual_seed(11)
    x = torch.randn(50, 5, dtype=torch.float64)
    cosines, index = knn_select(x, 6, block=7)
    dense = torch.zeros(50, 50, dtype=torch.float64).scatter_(
        1, index, normalized_knn_values(cosines, index))
    torch.testing.assert_close(dense, knn_matrix(x, 6), atol=TIGHT, rtol=0)


@pytest.mark.parametrize(("n_targets", "layers"), [(5, 1), (5, 2), (1, 3), (60, 1)])
def test_graph_built_where_the_targets_look_gives_their_full_product(n_targets, layers):
    """The first t rows of S^L x, S = 0.3 A(x1) + 0.7 A(x2) built only where they look, equal
    those of the dense S of every row (the reference's full sort), gradients included."""
    torch.manual_seed(13)
    x1, x2 = torch.randn(60, 4, dtype=torch.float64), torch.randn(60, 4, dtype=torch.float64)
    index, values = mixed_knn_graph((x1, x2), (0.3, 0.7), 3, n_targets, layers, block=7)
    built = values.abs().sum(1) > 0
    assert built[:n_targets].all()
    if n_targets < 60:  # a few rings of 6 neighbours do not reach all 60 rows
        assert not built.all()
    dense = 0.3 * knn_matrix(x1, 3) + 0.7 * knn_matrix(x2, 3)
    x = torch.randn(60, 2, dtype=torch.float64, requires_grad=True)
    got, want = x, x
    for _ in range(layers):
        got, want = fixed_width_matmul(index, values, got), dense @ want
    torch.testing.assert_close(got[:n_targets], want[:n_targets], atol=TIGHT, rtol=0)
    weights = torch.randn(n_targets, 2, dtype=torch.float64)
    grads = [torch.autograd.grad((y[:n_targets] * weights).sum(), x)[0] for y in (got, want)]
    torch.testing.assert_close(grads[0], grads[1], atol=TIGHT, rtol=0)


def test_fixed_width_product_and_its_gradient_by_dense_matrix():
    torch.manual_seed(12)
    index = torch.randint(0, 9, (9, 4))
    values = torch.rand(9, 4, dtype=torch.float64)
    x = torch.randn(9, 3, dtype=torch.float64, requires_grad=True)
    dense = torch.zeros(9, 9, dtype=torch.float64)
    for i in range(9):
        for k in range(4):
            dense[i, index[i, k]] += values[i, k]  # repeated columns add up
    y = fixed_width_matmul(index, values, x)
    torch.testing.assert_close(y, dense @ x, atol=TIGHT, rtol=0)
    grad_out = torch.randn(9, 3, dtype=torch.float64)
    (grad,) = torch.autograd.grad(y, x, grad_out)
    torch.testing.assert_close(grad, dense.t() @ grad_out, atol=TIGHT, rtol=0)


@pytest.mark.parametrize("symmetric", [True, False])
@pytest.mark.parametrize("tau", [0.5, 0.01])
def test_counted_grace_equals_repeated_rows(symmetric, tau):
    torch.manual_seed(3)
    a = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    b = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    counts = torch.tensor([1, 3, 2, 1, 4])
    rows = torch.repeat_interleave(torch.arange(5), counts)
    counted = grace_loss(a, b, tau, symmetric, counts)
    if symmetric:
        plain = ((one_way(a[rows], b[rows], tau) + one_way(b[rows], a[rows], tau)) / 2).sum()
    else:
        plain = one_way(a[rows], b[rows], tau).sum()
    torch.testing.assert_close(counted, plain, atol=TIGHT, rtol=0)
    got = torch.autograd.grad(counted, (a, b))
    want = torch.autograd.grad(plain, (a, b))
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, atol=TIGHT, rtol=0)


def test_knn_graph_is_rebuilt_on_the_refresh_schedule():
    model = make_model(knn_refresh_steps=2)
    model.train()
    graphs = []
    for _ in range(3):
        model(*BATCH)
        graphs.append(model._knn_cache)
    assert graphs[1] is graphs[0] and graphs[2] is not graphs[1]
    model.on_epoch_start(1, torch.Generator())
    model(*BATCH)
    assert model._knn_cache is not graphs[2]  # every epoch starts with a fresh graph
    once = make_model(knn_refresh_steps=0)
    once.train()
    once(*BATCH)
    first = once._knn_cache
    for _ in range(3):
        once(*BATCH)
    assert once._knn_cache is first
    once.eval()
    with torch.no_grad():
        once.final_embeddings()  # evaluation builds its own graph, not the training one
    assert once._knn_cache is first


@pytest.mark.parametrize(("refresh", "rebuilt_each_step"), [(1, True), (5, False)])
def test_refresh_one_builds_from_the_current_weights(refresh, rebuilt_each_step):
    """RecBole's schedule (1): a step after a weight change equals a step with a fresh graph;
    with a longer refresh the step reuses the graph of the old weights."""
    model = make_model(knn_refresh_steps=refresh)
    model.train()
    model(*BATCH)
    with torch.no_grad():
        model.entity_embedding.weight.mul_(-1.0).add_(0.3)
    after = model(*BATCH)["cl_local"]
    model.on_epoch_start(1, torch.Generator())  # the next step builds afresh
    assert torch.equal(after, model(*BATCH)["cl_local"]) is rebuilt_each_step


def test_dropout_draws_are_seeded_and_fresh():
    model = make_model(node_dropout_rate=0.5, mess_dropout_rate=0.3)
    model.train()
    assert_seeded_forward_repeats(model, BATCH, "cl_global")


def test_eval_embeddings_are_deterministic_unless_edge_sampling_in_eval():
    assert_eval_uses_every_triple_unless_sampling(make_model)


def test_edge_sampling_keeps_recboles_share_of_triples(monkeypatch):
    import simkgcl.models.mcclk as mcclk_module

    kept = []
    original = mcclk_module.sampled_subset

    def recorded(n, n_kept, device):
        mask = original(n, n_kept, device)
        kept.append(int(mask.sum()))
        return mask

    monkeypatch.setattr(mcclk_module, "sampled_subset", recorded)
    model = make_model(node_dropout_rate=0.7)
    model.train()
    model(*BATCH)
    n = toy_graph().kg_heads.numel()
    assert kept == [int(n * 0.7)] * 2  # structural hops and graph-building hops draw apart


def test_every_parameter_receives_a_gradient_from_the_loss():
    assert_every_parameter_learns(make_model(), BATCH)


def test_bad_config_is_rejected():
    with pytest.raises(ConfigError, match="loss_type"):
        make_model(loss_type="hinge")
    with pytest.raises(ConfigError, match="k = 11"):
        make_model(k=11)  # 10 entities
    with pytest.raises(ConfigError, match="knn_refresh_steps"):
        make_model(knn_refresh_steps=-1)
    with pytest.raises(ConfigError, match="mess_dropout_rate"):
        make_model(mess_dropout_rate=1.0)


def test_seed_configuration_is_recboles_defaults():
    config = Config(files=[str(CONFIGS / "mcclk.yaml")])
    assert config["model"] == "mcclk"
    expected = {"embedding_size": 64, "reg_weight": 1e-5, "n_hops": 2, "node_dropout_rate": 0.5,
                "mess_dropout_rate": 0.1, "lightgcn_layer": 2, "item_agg_layer": 1,
                "alpha": 0.2, "beta": 0.1, "k": 10, "lambda_coeff": 0.5, "temperature": 0.8,
                "build_graph_separately": True, "loss_type": "bpr", "extra_relation_rows": 2,
                "knn_refresh_steps": 1, "learning_rate": 1e-3, "train_batch_size": 2048,
                "stopping_step": 10, "stopping_warmup": 0}
    assert {k: config[k] for k in expected} == expected
    model = get_model_class("mcclk")(toy_graph(), {**config.to_dict(), "k": 3})
    assert model.relation_embedding.weight.shape == (toy_graph().n_relations + 2, 64)


def test_graph_without_triples_still_trains():
    empty = torch.zeros(0, dtype=torch.long)
    graph = replace(toy_graph(), kg_heads=empty, kg_relations=empty, kg_tails=empty)
    model = get_model_class("mcclk")(graph, {"embedding_size": 4, "k": 3})
    terms = model(*BATCH)
    sum(terms.values()).backward()
    assert all(torch.isfinite(v) for v in terms.values())


def test_trains_through_the_engine_and_ranks_training_items_first(tmp_path):
    from simkgcl.training.run import train
    from tests.training.engine_fixtures import make_tiny_data

    cfg = Config(model="mcclk", epochs=25, show_progress=False, checkpoint_dir=str(tmp_path),
                 topk=[5, 10], valid_metric="NDCG@10", device="cpu", embedding_size=16,
                 train_batch_size=64, learning_rate=0.01, stopping_step=100, threads=1, k=5)
    result = train(cfg, data=make_tiny_data())
    losses = [epoch["losses"] for epoch in result.history]
    assert set(losses[0]) == {"bpr", "reg", "cl_local", "cl_global"}
    assert losses[-1]["bpr"] < 0.5 * losses[0]["bpr"]
    assert share_ranking_seen_items_higher(result.run_dir) >= 0.9
