"""The shared operators (simkgcl.models.ops) and the KG index against plain formulas."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace
from pathlib import Path

import pytest
import torch

from simkgcl.errors import ConfigError
from simkgcl.models import get_model_class
from simkgcl.models.kg_index import KGIndex
from simkgcl.models.ops import (
    SparsePattern,
    TripleFactors,
    attention_logits,
    intent_scale,
    interaction_weights,
    keep_mask,
    kept_subset,
    relational_aggregate,
    sampled_subset,
    segment_mean_weights,
    sparse_dropout,
    unique_interactions,
    user_relation_scale,
)
from tests.models.toy_graph import toy_graph

F64 = torch.float64


def test_interaction_weights_by_hand():
    # users 0: items {0, 1}; user 1: item {1} (given twice: one edge); user 2: none
    users, items = unique_interactions(torch.tensor([0, 1, 0, 1]), torch.tensor([1, 1, 0, 1]), 3)
    assert users.tolist() == [0, 0, 1] and items.tolist() == [0, 1, 1]
    symmetric = interaction_weights(users, items, 3, 3)
    eps = 1e-7
    want = [(2 + eps) ** -0.5 * (1 + eps) ** -0.5, (2 + eps) ** -0.5 * (2 + eps) ** -0.5,
            (1 + eps) ** -0.5 * (2 + eps) ** -0.5]
    assert symmetric.dtype == F64
    torch.testing.assert_close(symmetric, torch.tensor(want, dtype=F64), rtol=0, atol=1e-15)
    mean = interaction_weights(users, items, 3, 3, norm="mean")  # RecBole's "si": 1 / deg_u
    assert mean.tolist() == [0.5, 0.5, 1.0]
    with pytest.raises(ValueError, match="norm"):
        interaction_weights(users, items, 3, 3, norm="left")


def _plain_logits(table, relations, heads, rels, tails):
    def factor(e, r):
        return ((table[e] * relations[r]) ** 2).sum()

    triples = zip(heads.tolist(), rels.tolist(), tails.tolist(), strict=True)
    return torch.stack([factor(h, r) * factor(t, r) for h, r, t in triples])


def test_attention_logits_and_gradients_match_plain_formula():
    torch.manual_seed(0)
    offset, n_entities, n_rel_rows = 2, 5, 3  # 3 relation rows: factor columns padded to 8
    heads = torch.tensor([0, 0, 1, 3, 3, 4])
    rels = torch.tensor([0, 2, 1, 1, 0, 2])
    tails = torch.tensor([1, 4, 2, 0, 4, 4])
    factors = TripleFactors(heads, tails, rels, n_entities, n_rel_rows, row_offset=offset)
    assert factors.n_cols == 8
    table = torch.randn(offset + n_entities, 4, dtype=F64, requires_grad=True)
    relations = torch.randn(n_rel_rows, 4, dtype=F64, requires_grad=True)
    got = attention_logits(table, relations, factors)
    want = _plain_logits(table[offset:], relations, heads, rels, tails)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    upstream = torch.randn(6, dtype=F64)
    grads = torch.autograd.grad((got * upstream).sum(), (table, relations))
    ref_grads = torch.autograd.grad((want * upstream).sum(), (table, relations))
    for g, w in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)
    assert torch.count_nonzero(grads[0][:offset]) == 0  # rows before the entities


def test_relational_aggregate_matches_plain_sums():
    """G @ x with the prefix rows (users) and (head, relation) pairs, scaled, summed per head."""
    torch.manual_seed(1)
    n_prefix, n_nodes, d = 2, 6, 3  # table: 2 users, then 4 entity rows
    # interactions (user, table row) and triples (head row, relation, tail row), sorted by pair
    ui = [(0, 2), (0, 3), (1, 4)]
    triples = [(2, 0, 3), (2, 0, 4), (2, 1, 5), (4, 1, 2)]
    pair_keys = sorted({(h, r) for h, r, _ in triples})
    pair_of = [pair_keys.index((h, r)) for h, r, _ in triples]
    gather = SparsePattern(
        torch.tensor([u for u, _ in ui] + [n_prefix + p for p in pair_of]),
        torch.tensor([j for _, j in ui] + [t for _, _, t in triples]),
        (n_prefix + len(pair_keys), n_nodes), fixed_rows=n_prefix)
    aggregate = SparsePattern(
        torch.tensor([0, 1] + [h for h, _ in pair_keys]),
        torch.arange(n_prefix + len(pair_keys)), (n_nodes, n_prefix + len(pair_keys)))
    pair_rels = torch.tensor([r for _, r in pair_keys])
    table = torch.randn(n_nodes, d, dtype=F64, requires_grad=True)
    relations = torch.randn(2, d, dtype=F64, requires_grad=True)
    v = torch.rand(len(ui), dtype=F64)
    a = torch.rand(len(triples), dtype=F64, requires_grad=True)
    scale = torch.randn(n_prefix, d, dtype=F64, requires_grad=True)
    gathered = gather.matmul(torch.cat([v, a]), table)
    ones = torch.ones(n_prefix + len(pair_keys), dtype=F64)
    got = relational_aggregate(gathered, scale, relations, relations.detach()[pair_rels],
                               pair_rels, aggregate, ones)
    rows = [torch.zeros(d, dtype=F64) for _ in range(n_nodes)]
    for k, (u, j) in enumerate(ui):
        rows[u] = rows[u] + v[k] * table[j]
    for u in range(n_prefix):
        rows[u] = rows[u] * scale[u]
    for k, (h, r, t) in enumerate(triples):
        rows[h] = rows[h] + a[k] * table[t] * relations[r]
    want = torch.stack(rows)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)
    upstream = torch.randn(n_nodes, d, dtype=F64)
    inputs = (table, relations, a, scale)
    grads = torch.autograd.grad((got * upstream).sum(), inputs)
    ref_grads = torch.autograd.grad((want * upstream).sum(), inputs)
    for g, w in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-12)


@pytest.mark.parametrize("softmax", [True, False])
def test_user_relation_scale_formula(softmax):
    torch.manual_seed(2)
    users, relations = torch.randn(4, 3, dtype=F64), torch.randn(5, 3, dtype=F64)
    affinity = users @ relations.t()
    if softmax:
        affinity = torch.exp(affinity) / torch.exp(affinity).sum(1, keepdim=True)
    want = 1 + affinity @ relations
    torch.testing.assert_close(user_relation_scale(users, relations, softmax), want)


@pytest.mark.parametrize("rate", [0.1, 0.5, 0.9])
def test_keep_mask_share_is_the_16_bit_rate(rate):
    torch.manual_seed(4)
    mask = keep_mask((1000, 1000), rate, torch.float32, torch.device("cpu"))
    assert set(mask.unique().tolist()) <= {0.0, 1.0}
    exact = 1 - round(rate * 65536) / 65536  # the keep probability of 16-bit draws
    assert abs(mask.double().mean().item() - exact) < 2e-3  # 1e6 draws: sd <= 5e-4
    assert not torch.equal(mask, keep_mask((1000, 1000), rate, torch.float32, mask.device))


def test_sparse_dropout_scales_kept_values_and_kept_subset_has_the_exact_size():
    torch.manual_seed(5)
    values = torch.rand(10_000, dtype=F64) + 0.5
    dropped = sparse_dropout(values, 0.3)
    kept = dropped != 0
    torch.testing.assert_close(dropped[kept], values[kept] / 0.7)
    assert abs(kept.double().mean().item() - 0.7) < 0.02
    masks = torch.stack([kept_subset(50, 0.3, torch.device("cpu")) for _ in range(400)])
    assert all(int(m.sum()) == 35 for m in masks)
    assert (masks.double().mean(0) - 0.7).abs().max() < 0.15  # every entry kept ~70%


def test_kg_index_lives_in_buffers_that_checkpoints_do_not_store():
    model = get_model_class("simkgcl")(toy_graph(), {"embedding_size": 4})
    assert set(model.state_dict()) == {
        "user_embedding.weight", "entity_embedding.weight", "relation_embedding.weight"}
    index = model.kg
    assert index.n_slots == 9 + 1  # items 0-5, heads 6, 7, 9 + the zero slot
    assert index.active_entities.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 9]
    assert index.layer0_order.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 9, 8]
    assert index.n_pairs == 11  # 13 triples; (0, 1) and (2, 0) hold two each
    meta = model.to("meta")
    assert meta.kg.triple_head_slots.device.type == "meta"
    assert meta.kg.slots.gather.col.device.type == "meta"


def test_kg_index_rejects_inconsistent_graphs():
    graph = toy_graph()
    users, items = unique_interactions(graph.train_users, graph.train_items, graph.n_items)
    with pytest.raises(ConfigError, match="item i must be entity i"):
        KGIndex(replace(graph, n_entities=4), users, items, 4)
    with pytest.raises(ConfigError, match="out of range"):
        KGIndex(replace(graph, n_relations=2), users, items, 4)


def test_models_leave_warning_filters_alone_and_emit_no_warning(tmp_path: Path):
    """Importing and running the models changes no process-wide warning filter, and PyTorch's
    one-time CSR "beta" warning is handled inside the operators (run with -W error)."""
    script = textwrap.dedent("""
        import warnings
        import torch
        before = list(warnings.filters)
        from simkgcl.models import get_model_class
        from tests.models.toy_graph import toy_graph
        for name in ("lightgcn", "simkgcl"):
            model = get_model_class(name)(toy_graph(), {"embedding_size": 4})
            terms = model(torch.tensor([0, 1]), torch.tensor([0, 1]), torch.tensor([2, 3]))
            sum(terms.values()).backward()
        assert list(warnings.filters) == before, "warning filters changed"
        print("clean")
    """)
    root = Path(__file__).resolve().parents[2]
    done = subprocess.run([sys.executable, "-W", "error", "-c", script], cwd=root,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


def test_segment_mean_weights_by_hand():
    # segments 0: entries 0, 1, 3; segment 1: none; segment 2: entries 2, 4
    segments = torch.tensor([0, 0, 2, 0, 2])
    weights = segment_mean_weights(segments, 3, dtype=F64)
    assert weights.tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 2, 1 / 3, 1 / 2])
    mask = torch.tensor([True, False, True, True, False])
    weights = segment_mean_weights(segments, 3, mask, dtype=F64)
    assert weights.tolist() == pytest.approx([1 / 2, 0.0, 1.0, 1 / 2, 0.0])
    assert mask.tolist() == [True, False, True, True, False]  # the caller's mask is untouched


def test_sampled_subset_has_the_exact_count():
    torch.manual_seed(6)
    masks = torch.stack([sampled_subset(40, 13, torch.device("cpu")) for _ in range(400)])
    assert all(int(m.sum()) == 13 for m in masks)
    assert (masks.double().mean(0) - 13 / 40).abs().max() < 0.12  # every entry ~ 13/40
    assert int(sampled_subset(5, 0, torch.device("cpu")).sum()) == 0


def test_intent_scale_formula():
    torch.manual_seed(3)
    users, intents = torch.randn(4, 3, dtype=F64), torch.randn(2, 3, dtype=F64)
    intent_relations = torch.randn(2, 3, dtype=F64)
    affinity = torch.exp(users @ intents.t())
    affinity = affinity / affinity.sum(1, keepdim=True)
    want = torch.stack([1 + affinity[u, 0] * intent_relations[0]
                        + affinity[u, 1] * intent_relations[1] for u in range(4)])
    torch.testing.assert_close(intent_scale(users, intents, intent_relations), want)


def test_kg_index_entity_gather_reads_the_entity_table_by_id():
    """``G`` over entity ids equals the layer-0 ``G`` with its columns mapped back to ids."""
    graph = toy_graph()
    users, items = unique_interactions(graph.train_users, graph.train_items, graph.n_items)
    index = KGIndex(graph, users, items, graph.n_relations + 1)
    assert index.layer0_order is not None  # entity 8 (no triples) sits after entity 9
    gather = index.entity_gather()
    values = torch.rand(gather.nnz, dtype=F64)
    torch.manual_seed(1)
    entities = torch.randn(graph.n_entities, 3, dtype=F64)
    table = torch.cat([torch.randn(graph.n_users, 3, dtype=F64),
                       index.layer0_entities(entities)])
    torch.testing.assert_close(gather.matmul(values, entities),
                               index.layer0.gather.matmul(values, table))
    dense = gather.to_dense(values)
    for u, i, v in zip(users.tolist(), items.tolist(), values[: len(users)].tolist(),
                       strict=True):
        assert dense[u, i] == v  # a user's row: its items' entity ids
