"""KGAT: the collaborative KG, attention (by hand and against the plain reference), embeddings,
losses and gradients against the reference (dropout off and replayed), TransR batches, the
epoch order, configuration, and a run through the engine."""

from __future__ import annotations

import math
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import simkgcl.models.ops.dropout as dropout_module
from simkgcl.config import Config
from simkgcl.errors import ConfigError
from simkgcl.graph import GraphData
from simkgcl.models import get_model_class
from simkgcl.sampling.negative import MODEL_EPOCH_STREAM, epoch_generator
from tests.models import reference_kgat as ref
from tests.models.equivalence import assert_terms_and_gradients_close, spy
from tests.models.toy_graph import toy_graph

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
BATCH = (
    torch.tensor([0, 2, 2, 4, 1, 3]),
    torch.tensor([0, 3, 5, 1, 2, 2]),
    torch.tensor([4, 1, 0, 2, 5, 3]),
)
TIGHT = 1e-10  # float64: the fast model and the reference agree to ~1e-15


def kgat_graph() -> GraphData:
    """The toy graph (with its repeated interaction) plus (0, 2, 6), which shares the cell
    (0, 6) with (0, 0, 6), and a repeated triple (2, 0, 7)."""
    graph = toy_graph()
    extra = torch.tensor([[0, 2, 6], [2, 0, 7]])
    return replace(graph, kg_heads=torch.cat([graph.kg_heads, extra[:, 0]]),
                   kg_relations=torch.cat([graph.kg_relations, extra[:, 1]]),
                   kg_tails=torch.cat([graph.kg_tails, extra[:, 2]]))


def make_model(graph: GraphData | None = None, **overrides):
    torch.manual_seed(7)
    config = {"embedding_size": 4, "kg_embedding_size": 3, "layers": [5, 3],
              "mess_dropout": 0.0, "reg_weight": 0.1, **overrides}
    model = get_model_class("kgat")(graph or kgat_graph(), config).double()
    with torch.no_grad():  # larger rows: attention far from uniform, layers far from linear
        model.trans_w.weight.mul_(2.0)
        model.relation_embedding.weight.mul_(2.0)
        model.user_embedding.weight.mul_(3.0)
        model.entity_embedding.weight.mul_(3.0)
    return model


def params_of(model) -> dict[str, torch.Tensor]:
    return {"user": model.user_embedding.weight, "entity": model.entity_embedding.weight,
            "relation": model.relation_embedding.weight, "trans_w": model.trans_w.weight,
            **{name: p for name, p in model.aggregator_layers.named_parameters()}}


def reference_params(model) -> dict:
    layers = []
    for layer in model.aggregator_layers:
        names = ("W1", "W2") if layer.kind == "bi" else ("W",)
        layers.append({n: (getattr(layer, n).weight, getattr(layer, n).bias) for n in names})
    return {"user": model.user_embedding.weight, "entity": model.entity_embedding.weight,
            "relation": model.relation_embedding.weight, "trans_w": model.trans_w.weight,
            "layers": layers}


def dense_attention(model) -> torch.Tensor:
    return model.ckg.adjacency.to_dense(model.attention_values)


def test_initial_attention_is_recboles_per_relation_normalised_adjacency():
    model = make_model()
    torch.testing.assert_close(dense_attention(model), ref.initial_attention(kgat_graph()),
                               atol=TIGHT, rtol=0)
    graph = kgat_graph()
    assert model.ckg.n_edges == 2 * graph.train_users.numel() + graph.kg_heads.numel()
    assert model.ckg.n_relation_rows == graph.n_relations + 1  # + the interaction relation


def test_attention_matches_plain_reference():
    model = make_model()
    model.update_attention()
    want = ref.attention(kgat_graph(), reference_params(model))
    torch.testing.assert_close(dense_attention(model), want, atol=TIGHT, rtol=0)
    rows = want.sum(dim=1)
    torch.testing.assert_close(rows[rows > 0], torch.ones_like(rows[rows > 0]))
    shared = want[(want > 0).sum(dim=1) > 1]  # rows with several cells: far from uniform
    weights = shared[shared > 0]
    assert float(weights.std()) > 0.1 and int(((weights > 0.1) & (weights < 0.9)).sum()) >= 4


def test_attention_by_hand():
    """1 user, items 0 and 1, entity 2; relations 0, 1 and the interaction relation 2; every
    W_r the identity, so pi(h, r, t) = x_t . tanh(x_h + e_r)."""
    graph = GraphData(n_users=1, n_items=2, n_entities=3, n_relations=2,
                      train_users=torch.tensor([0, 0]), train_items=torch.tensor([0, 1]),
                      kg_heads=torch.tensor([0, 0]), kg_relations=torch.tensor([0, 1]),
                      kg_tails=torch.tensor([2, 2]))
    model = get_model_class("kgat")(graph, {"embedding_size": 2, "kg_embedding_size": 2})
    model = model.double()
    with torch.no_grad():
        model.user_embedding.weight.copy_(torch.tensor([[1.0, 0.0]]))
        model.entity_embedding.weight.copy_(torch.tensor([[0.5, 0.0], [0.0, 1.0], [1.0, 1.0]]))
        model.relation_embedding.weight.copy_(torch.tensor([[0.0, 1.0], [1.0, 0.0], [0.0, 0.0]]))
        model.trans_w.weight.copy_(torch.tensor([[1.0, 0.0, 0.0, 1.0]]).repeat(3, 1))
    # nodes: user 0, item 0 = 1, item 1 = 2, entity 2 = 3
    a0 = dense_attention(model)
    assert a0[0, 1] == a0[0, 2] == 0.5  # the user's two interactions
    assert a0[1, 0] == 1.0 and a0[1, 3] == 2.0  # two relations to entity 2: 1/1 + 1/1
    assert a0[2, 0] == 1.0
    model.update_attention()
    a = dense_attention(model)
    th = math.tanh
    # user -> item 0: (0.5, 0) . tanh(1, 0); user -> item 1: (0, 1) . tanh(1, 0) = 0
    to_item0 = math.exp(0.5 * th(1.0))
    assert float(a[0, 1]) == pytest.approx(to_item0 / (to_item0 + 1.0), abs=1e-12)
    assert float(a[0, 2]) == pytest.approx(1.0 / (to_item0 + 1.0), abs=1e-12)
    # item 0 -> user: (1, 0) . tanh(0.5, 0); item 0 -> entity 2, two edges summed:
    # (1, 1) . tanh((0.5, 0) + (0, 1)) + (1, 1) . tanh((0.5, 0) + (1, 0))
    to_user = math.exp(th(0.5))
    to_entity = math.exp(th(0.5) + th(1.0) + th(1.5) + th(0.0))
    assert float(a[1, 0]) == pytest.approx(to_user / (to_user + to_entity), abs=1e-12)
    assert float(a[1, 3]) == pytest.approx(to_entity / (to_user + to_entity), abs=1e-12)
    assert float(a[2, 0]) == 1.0 and torch.count_nonzero(a[3]) == 0  # a tail-only entity


@pytest.mark.parametrize(("kind", "layers"), [("bi", [5, 3]), ("gcn", [4]),
                                              ("graphsage", [3, 4, 2])])
def test_fast_model_matches_plain_reference(kind, layers):
    model = make_model(aggregator_type=kind, layers=layers)
    model.update_attention()
    model.train()  # dropout 0: training mode must equal the reference exactly
    rp, params = reference_params(model), params_of(model)
    a = ref.attention(kgat_graph(), rp)
    final = ref.embeddings(a, rp, kind)
    users, items = model.final_embeddings()
    n_users = model.n_users
    assert users.shape[1] == 4 + sum(layers)
    torch.testing.assert_close(users, final[:n_users], atol=TIGHT, rtol=0)
    torch.testing.assert_close(items, final[n_users : n_users + model.n_items], atol=TIGHT,
                               rtol=0)
    terms = model(*BATCH)
    ref_terms = ref.cf_losses(final, n_users, *BATCH, reg_weight=model.reg_weight)
    assert_terms_and_gradients_close(terms, ref_terms, params)


def test_message_dropout_replayed_in_the_reference(monkeypatch):
    model = make_model(mess_dropout=0.4)
    model.train()
    masks: list[torch.Tensor] = []
    torch.manual_seed(3)
    with monkeypatch.context() as patch:
        spy(patch, dropout_module, "keep_mask", lambda m: masks.append(m.clone()))
        terms = model(*BATCH)
    assert len(masks) == 2 and 0 < float(torch.cat([m.flatten() for m in masks]).mean()) < 1
    n_nodes, n_scored = model.ckg.n_nodes, model.n_users + model.n_items
    assert masks[0].shape == (n_nodes, 5) and masks[1].shape == (n_scored, 3)
    # the last layer is computed for the scored rows alone: the others' mask is immaterial
    masks[1] = torch.cat([masks[1], torch.ones(n_nodes - n_scored, 3, dtype=masks[1].dtype)])
    rp = reference_params(model)
    final = ref.embeddings(ref.initial_attention(kgat_graph()), rp, "bi", masks, 0.4)
    ref_terms = ref.cf_losses(final, model.n_users, *BATCH, reg_weight=model.reg_weight)
    assert_terms_and_gradients_close(terms, ref_terms, params_of(model))
    model.eval()
    with torch.no_grad():
        first, second = model.final_embeddings(), model.final_embeddings()
    assert torch.equal(first[0], second[0])  # no dropout in evaluation


def test_kg_loss_and_gradients_match_reference():
    model = make_model()
    model.on_epoch_start(1, torch.Generator().manual_seed(4))
    batch = model._kg_batches[0]
    terms = model.extra_steps()[0]()
    want = ref.kg_losses(reference_params(model), *batch, reg_weight=model.reg_weight)
    assert_terms_and_gradients_close(terms, want, params_of(model))


def test_kg_batches_cover_every_triple_with_corrupted_tails():
    graph = kgat_graph()
    model = make_model(kg_batch_size=4)
    batches = model.ckg.kg_batches(4, torch.Generator().manual_seed(1))
    assert [len(b[0]) for b in batches] == [4, 4, 4, 3]  # 15 triples, the last batch partial
    heads, rels, pos, neg = (torch.cat(col) for col in zip(*batches, strict=True))
    triples = list(zip(graph.kg_heads.tolist(), graph.kg_relations.tolist(),
                       graph.kg_tails.tolist(), strict=True))
    assert sorted(zip(heads.tolist(), rels.tolist(), pos.tolist(), strict=True)) == sorted(
        triples)
    tails_of = {h: {t for hh, _, t in triples if hh == h} for h, _, _ in triples}
    assert all(t not in tails_of[h] for h, t in zip(heads.tolist(), neg.tolist(), strict=True))
    again = model.ckg.kg_batches(4, torch.Generator().manual_seed(1))
    assert all(torch.equal(x, y) for b, c in zip(batches, again, strict=True)
               for x, y in zip(b, c, strict=True))
    # a batch of train_batch_size triples unless kg_batch_size says otherwise
    assert make_model(train_batch_size=7).kg_batch_size == 7


def test_epoch_order_cf_first_then_kg_steps_then_attention():
    model = make_model()
    a0 = model.attention_values.clone()
    model.on_epoch_start(0, epoch_generator(2020, 0, MODEL_EPOCH_STREAM))
    assert model.extra_steps() == []
    model.train()
    model(*BATCH)
    assert torch.equal(model.attention_values, a0)  # epoch 0 runs on A0
    model.on_epoch_start(1, epoch_generator(2020, 1, MODEL_EPOCH_STREAM))
    assert len(model.extra_steps()) == 1
    model.eval()
    model(*BATCH)
    assert torch.equal(model.attention_values, a0)  # no update outside training
    model.train()
    expected = model.attention()
    model(*BATCH)
    assert torch.equal(model.attention_values, expected)
    with torch.no_grad():
        model.entity_embedding.weight.add_(1.0)
    model(*BATCH)
    assert torch.equal(model.attention_values, expected)  # once per epoch
    assert "attention_values" in model.state_dict()


def test_bad_config_is_rejected():
    for key, value in (("aggregator_type", "mean"), ("layers", []), ("layers", [8, 0]),
                       ("mess_dropout", 1.0), ("kg_batch_size", 0)):
        with pytest.raises(ConfigError, match=key):
            make_model(**{key: value})


def test_seed_configuration_is_recboles_defaults():
    config = Config(files=[str(CONFIGS / "kgat.yaml")])
    expected = {"model": "kgat", "embedding_size": 64, "kg_embedding_size": 64, "layers": [64],
                "aggregator_type": "bi", "mess_dropout": 0.1, "reg_weight": 1e-5,
                "kg_batch_size": None, "kg_reverse_r": False, "learning_rate": 1e-3,
                "train_batch_size": 2048, "stopping_step": 10, "stopping_warmup": 0}
    assert {k: config[k] for k in expected} == expected
    model = get_model_class("kgat")(toy_graph(), config)
    assert model.trans_w.weight.shape == (toy_graph().n_relations + 1, 64 * 64)
    assert model.kg_batch_size == 2048


def test_trains_through_the_engine(tmp_path):
    """Loss terms logged by name (TransR from the second epoch), BPR falls, and the checkpoint
    holds the attention the last epoch used."""
    from simkgcl.training.run import train
    from tests.training.engine_fixtures import make_tiny_data

    cfg = Config(model="kgat", epochs=12, show_progress=False, checkpoint_dir=str(tmp_path),
                 topk=[5, 10], valid_metric="NDCG@10", device="cpu", embedding_size=16,
                 kg_embedding_size=8, layers=[16, 8], train_batch_size=64, learning_rate=0.01,
                 stopping_step=100, threads=1)
    result = train(cfg, data=make_tiny_data())
    losses = [epoch["losses"] for epoch in result.history]
    assert set(losses[0]) == {"bpr", "reg"}
    assert set(losses[1]) == {"bpr", "reg", "kg", "kg_reg"}
    assert losses[-1]["bpr"] < 0.7 * losses[0]["bpr"]
    last = torch.load(Path(result.run_dir) / "checkpoints" / "last.pt", weights_only=True)
    values = last["model"]["attention_values"]
    assert values.shape[0] > 0 and not torch.allclose(values, values[:1].expand_as(values))


def test_transr_operators_match_row_by_row_products():
    from simkgcl.models.ops import (
        RelationGroups,
        translation_distance,
        transr_attention_logits,
        transr_project,
    )

    gen = torch.Generator().manual_seed(0)
    rows = torch.randn(2, 9, 3, generator=gen, dtype=torch.float64)
    relations = torch.tensor([4, 0, 4, 2, 0, 0, 4, 2, 4])  # relations 1 and 3 absent
    projections = torch.randn(5, 3 * 2, generator=gen, dtype=torch.float64)
    got = transr_project(rows, relations, projections)
    want = torch.stack([torch.stack([rows[s, b] @ projections[relations[b]].view(3, 2)
                                     for b in range(9)]) for s in range(2)])
    torch.testing.assert_close(got, want, atol=TIGHT, rtol=0)
    vectors = torch.randn(5, 2, generator=gen, dtype=torch.float64)
    distance = translation_distance(got[0], vectors[relations], got[1])
    torch.testing.assert_close(distance, ((got[0] + vectors[relations] - got[1]) ** 2).sum(1))
    table = torch.randn(6, 3, generator=gen, dtype=torch.float64)
    heads, tails = torch.tensor([0, 5, 2, 0, 3]), torch.tensor([1, 1, 4, 4, 0])
    edge_rel = torch.tensor([2, 0, 2, 4, 0])
    groups = RelationGroups(heads, edge_rel, tails)
    logits = transr_attention_logits(table, vectors, projections, groups)
    for j, e in enumerate(groups.edge_order.tolist()):
        w = projections[edge_rel[e]].view(3, 2)
        pi = (table[tails[e]] @ w) @ torch.tanh(table[heads[e]] @ w + vectors[edge_rel[e]])
        assert float(logits[j]) == pytest.approx(float(pi), abs=1e-12)


def test_a_resumed_run_continues_exactly(tmp_path):
    """Stopped after epoch 1 and resumed: the same epochs, losses, validations and test as an
    uninterrupted run; and the best checkpoint, reloaded, scores the test as the run did (the
    attention A it was validated with is saved with it)."""
    from simkgcl.training.run import evaluate_run, resume_run, train
    from tests.training.engine_fixtures import make_tiny_data

    values = {"model": "kgat", "show_progress": False, "topk": [5, 10],
              "valid_metric": "NDCG@10", "device": "cpu", "embedding_size": 8,
              "kg_embedding_size": 4, "layers": [8, 4], "train_batch_size": 64,
              "learning_rate": 0.01, "stopping_step": 100, "threads": 1}
    data = make_tiny_data()
    whole = train(Config({**values, "epochs": 4, "checkpoint_dir": str(tmp_path / "a")}),
                  data=data)
    first = train(Config({**values, "epochs": 2, "checkpoint_dir": str(tmp_path / "b")}),
                  data=data)
    resumed = resume_run(first.run_dir, ["epochs=4"], data=data)
    keep = ("epoch", "losses", "valid")
    assert ([{k: r[k] for k in keep} for r in resumed.history]
            == [{k: r[k] for k in keep} for r in whole.history])
    assert resumed.test == whole.test
    assert evaluate_run(whole.run_dir, data=data) == whole.test
