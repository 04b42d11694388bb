"""What the models' equivalence tests share: comparing loss terms and gradients with a plain
reference, spying on a model's random draws, replaying them in the toy graph's plain terms
(original triple indices, a dense interaction block, rows by entity id), and the check that a
seeded forward repeats while the next one draws afresh."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import pytest
import torch

from simkgcl.graph import GraphData

TIGHT = 1e-10  # float64: the fast models and the references agree to ~1e-14


def assert_terms_and_gradients_close(terms: Mapping[str, torch.Tensor],
                                     ref_terms: Mapping[str, torch.Tensor],
                                     params: Mapping[str, torch.Tensor]) -> None:
    """Equal loss terms and equal gradients of each term for every parameter table (a table a
    term does not reach must get no gradient from either)."""
    assert set(terms) == set(ref_terms)
    weights = list(params.values())
    for name in terms:
        torch.testing.assert_close(terms[name], ref_terms[name], atol=TIGHT, rtol=0)
        grads = torch.autograd.grad(terms[name], weights, retain_graph=True, allow_unused=True)
        ref_grads = torch.autograd.grad(ref_terms[name], weights, retain_graph=True,
                                        allow_unused=True)
        for table, got, want, weight in zip(params, grads, ref_grads, weights, strict=True):
            got = torch.zeros_like(weight) if got is None else got
            want = torch.zeros_like(weight) if want is None else want
            torch.testing.assert_close(got, want, atol=TIGHT, rtol=0,
                                       msg=lambda m, t=table, n=name: f"{n} / {t}: {m}")


def kg_params(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """The user, entity and relation tables of a KG model (the tables every such model has)."""
    return {
        "user": model.user_embedding.weight,
        "entity": model.entity_embedding.weight,
        "relation": model.relation_embedding.weight,
    }


def spy(patch: pytest.MonkeyPatch, owner: Any, attribute: str,
        record: Callable[[Any], None]) -> None:
    """Replace ``owner.attribute`` (a function) by one that hands each result to ``record``."""
    original = getattr(owner, attribute)

    def recorded(*args, **kwargs):
        result = original(*args, **kwargs)
        record(result)
        return result

    patch.setattr(owner, attribute, recorded)


@dataclass(frozen=True)
class ToyIndex:
    """How the fast models order a graph's parts, written plainly (for replaying draws)."""

    n_users: int
    n_items: int
    n_entities: int
    sorted_triples: list[int]  # original index of each triple in (head, relation, tail) order
    pairs: list[tuple[int, int]]  # the distinct interactions, sorted
    slot: dict[int, int]  # entity -> its row among the slots (the zero slot if inactive)

    def kept_triples(self, kept_sorted: torch.Tensor) -> set[int]:
        """Original indices of the triples kept (a mask or weights in sorted-triple order)."""
        return {self.sorted_triples[j] for j in torch.nonzero(kept_sorted).flatten().tolist()}

    def dense_ui(self, values: torch.Tensor) -> torch.Tensor:
        """U x I with ``values`` (one per distinct interaction, sorted) at the interactions."""
        ui = torch.zeros(self.n_users, self.n_items, dtype=torch.float64)
        for (u, i), value in zip(self.pairs, values.tolist(), strict=True):
            ui[u, i] = value
        return ui

    def entity_rows(self, table: torch.Tensor) -> torch.Tensor:
        """E rows by entity id from a ``[users; slots]`` table (an active entity's slot)."""
        return torch.stack([table[self.n_users + self.slot[e]] for e in range(self.n_entities)])


def toy_index(graph: GraphData) -> ToyIndex:
    triples = list(zip(graph.kg_heads.tolist(), graph.kg_relations.tolist(),
                       graph.kg_tails.tolist(), strict=True))
    active = sorted(set(range(graph.n_items)) | {h for h, _, _ in triples})
    return ToyIndex(
        n_users=graph.n_users,
        n_items=graph.n_items,
        n_entities=graph.n_entities,
        sorted_triples=sorted(range(len(triples)), key=lambda k: triples[k]),
        pairs=sorted(set(zip(graph.train_users.tolist(), graph.train_items.tolist(),
                             strict=True))),
        slot={e: active.index(e) if e in active else len(active)
              for e in range(graph.n_entities)},
    )


def assert_seeded_forward_repeats(model: torch.nn.Module, batch: tuple, term: str) -> None:
    """The same torch seed gives the same loss; the next forward draws afresh."""
    torch.manual_seed(5)
    first = model(*batch)
    torch.manual_seed(5)
    second = model(*batch)
    third = model(*batch)
    assert torch.equal(first[term], second[term])
    assert not torch.equal(second[term], third[term])


def share_ranking_seen_items_higher(run_dir: Any) -> float:
    """Share of a trained run's users whose training items score above their other items on
    average, from the run's artifact (a model that learned anything puts most users there)."""
    from simkgcl.artifact import load_artifact

    artifact = load_artifact(run_dir)
    scores = artifact.user_embeddings @ artifact.item_embeddings.t()
    ahead = 0
    for user in range(artifact.n_users):
        seen = torch.zeros(artifact.n_items, dtype=torch.bool)
        seen[artifact.seen_items(user)] = True
        ahead += int(scores[user, seen].mean() > scores[user, ~seen].mean())
    return ahead / artifact.n_users


def assert_every_parameter_learns(model: torch.nn.Module, batch: tuple) -> None:
    """The summed loss of one batch gives every parameter table a non-zero gradient (no table
    left out of the loss by mistake)."""
    sum(model(*batch).values()).backward()
    for name, weight in model.named_parameters():
        assert weight.grad is not None and torch.count_nonzero(weight.grad) > 0, name


def assert_eval_uses_every_triple_unless_sampling(make_model: Callable[..., torch.nn.Module]
                                                   ) -> None:
    """With dropout rates set, evaluation embeddings repeat and equal those of a model without
    edge sampling (every triple, no dropout); with ``eval_edge_sampling`` they are redrawn."""
    model = make_model(node_dropout_rate=0.5, mess_dropout_rate=0.3).eval()
    full = make_model(node_dropout_rate=0.0).eval()
    with torch.no_grad():
        a, b = model.final_embeddings(), model.final_embeddings()
        want = full.final_embeddings()
    for got, again, plain in zip(a, b, want, strict=True):
        assert torch.equal(got, again)
        torch.testing.assert_close(got, plain, atol=0, rtol=0)
    sampled = make_model(node_dropout_rate=0.5, eval_edge_sampling=True).eval()
    with torch.no_grad():
        c, d = sampled.final_embeddings(), sampled.final_embeddings()
    assert not torch.equal(c[1], d[1])
