"""KG explanations: paths known by construction on a hand toy, and every path of a random KG
against a brute-force enumeration sharing no code with the explainer."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest
import torch

from simkgcl.artifact import load_artifact, save_artifact
from simkgcl.serving.explain import KGExplainer
from simkgcl.serving.recommend import RecommendationService

ITEMS = ["i0", "i1", "i2", "i3", "i4", "i5"]
# items are entities 0..5 (i2 has no linked entity: token ''), KG-only entities follow
ENTITIES = ["m.i0", "m.i1", "", "m.i3", "m.i4", "m.i5", "m.director", "m.genre", "m.country",
            "m.lonely"]
RELATIONS = ["directed_by", "genre", "country", "similar_to"]
TRIPLES = [
    (0, 0, 6), (1, 0, 6),  # i0 and i1 share a director: 1 entity between
    (0, 1, 7), (7, 2, 8), (3, 2, 8),  # i0 -> genre -> country <- i3: 2 entities between
    (4, 3, 0),  # i4 similar_to i0: a direct triple, pointing at i0
    (6, 1, 0),  # a second relation between i0 and m.director: the same nodes, shown once
    (5, 0, 9),  # i5 links only to an entity nobody else has
]
# unit item rows with chosen cosines to i0: i3 0.9, i5 0.8, i1 0.5, i4 0.1
COS = {1: 0.5, 3: 0.9, 4: 0.1, 5: 0.8, 2: 0.0}


def _item_rows() -> np.ndarray:
    rows = np.zeros((6, 2), dtype=np.float32)
    rows[0] = [1.0, 0.0]
    for item, cos in COS.items():
        rows[item] = [cos, np.sqrt(1 - cos**2)]
    return rows * np.arange(1, 7, dtype=np.float32)[:, None]  # lengths differ: cosine, not dot


def _toy(tmp_path: Path, triples=TRIPLES, entities=ENTITIES,
         history=(1, 3, 4, 5)) -> RecommendationService:
    save_artifact(tmp_path, model="lightgcn", dataset="toy", config={}, metrics={},
                  user_tokens=["alice", "bob"], item_tokens=ITEMS,
                  user_embeddings=torch.ones(2, 2), item_embeddings=torch.from_numpy(_item_rows()),
                  train_users=np.asarray([0] * len(history) + [1]),
                  train_items=np.asarray([*history, 0]),
                  kg=(np.asarray(triples), entities, RELATIONS))
    return RecommendationService(load_artifact(tmp_path))


def test_known_paths_ranked_by_history_item_cosine(tmp_path: Path) -> None:
    service = _toy(tmp_path)
    got = service.explain("alice", "i0", max_paths=5)
    assert got.explained and got.note is None
    assert [(p.history_item, p.hops) for p in got.paths] == [("i3", 2), ("i1", 1), ("i4", 0)]
    np.testing.assert_allclose([p.relevance for p in got.paths], [0.9, 0.5, 0.1], rtol=1e-6)
    texts = [p.text() for p in got.paths]
    assert texts == [
        "item i0 — genre → entity m.genre — country → entity m.country ← country — item i3 "
        "(in your history)",
        "item i0 — directed_by → entity m.director ← directed_by — item i1 (in your history)",
        "item i0 ← similar_to — item i4 (in your history)",
    ]
    two = service.explain("alice", "i0", max_paths=2)
    assert [p.history_item for p in two.paths] == ["i3", "i1"]
    as_dict = got.paths[0].as_dict()
    assert as_dict["nodes"][1] == {"kind": "entity", "token": "m.genre"}
    assert as_dict["edges"][2] == {"relation": "country", "forward": False}


def test_items_without_a_kg_link_say_so(tmp_path: Path) -> None:
    service = _toy(tmp_path)
    for item in ("i2", "i5"):  # i2: no triple at all; i5: an entity no history item shares
        got = service.explain("alice", item)
        assert not got.explained and got.paths == []
        assert "no KG link" in (got.note or "")
    bare = tmp_path / "bare"
    save_artifact(bare, model="bpr", dataset="toy", config={}, metrics={},
                  user_tokens=["alice"], item_tokens=ITEMS, user_embeddings=torch.ones(1, 2),
                  item_embeddings=torch.ones(6, 2), train_users=np.zeros(1, dtype=np.int64),
                  train_items=np.ones(1, dtype=np.int64))
    got = RecommendationService.from_run_dir(bare).explain("alice", "i0")
    assert not got.explained and "no knowledge graph" in (got.note or "")


def _brute_force_paths(triples, n_nodes: int, r: int, h: int) -> set[tuple]:
    """Every simple path r .. h with at most 2 nodes between, as (nodes, (rel, forward)...)."""
    links: dict[tuple[int, int], list[tuple[int, bool]]] = {}
    for head, rel, tail in triples:
        if head != tail:
            links.setdefault((head, tail), []).append((rel, True))
            links.setdefault((tail, head), []).append((rel, False))
    found = set()
    middles = [n for n in range(n_nodes) if n not in (r, h)]
    candidates = [()] + [(a,) for a in middles] + [
        (a, b) for a, b in itertools.permutations(middles, 2)]
    for middle in candidates:
        nodes = (r, *middle, h)
        hops = [links.get((a, b), []) for a, b in itertools.pairwise(nodes)]
        for edges in itertools.product(*hops):
            found.add((nodes, edges))
    return found


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_every_path_of_a_random_kg_matches_brute_force(tmp_path: Path, seed: int) -> None:
    rng = np.random.default_rng(seed)
    n_entities = 14
    triples = {(int(rng.integers(n_entities)), int(rng.integers(4)), int(rng.integers(n_entities)))
               for _ in range(26)}
    entities = [f"e{n}" for n in range(n_entities)]
    service = _toy(tmp_path, triples=sorted(triples), entities=entities, history=(1, 2, 3, 4, 5))
    explainer = KGExplainer(service.artifact)
    for h in range(1, 6):
        got = explainer.explain(0, np.asarray([h]), max_paths=10_000)
        token_of = {**{i: ("item", t) for i, t in enumerate(ITEMS)},
                    **{n: ("entity", entities[n]) for n in range(6, n_entities)}}
        expected = {(tuple(token_of[n] for n in nodes),
                     tuple((RELATIONS[rel], fwd) for rel, fwd in edges))
                    for nodes, edges in _brute_force_paths(triples, n_entities, 0, h)}
        # one path per node sequence, with relations the brute force also finds
        assert len({tuple(p.nodes) for p in got.paths}) == len(got.paths)
        assert {tuple(p.nodes) for p in got.paths} == {nodes for nodes, _ in expected}
        assert {(tuple(p.nodes), tuple(p.edges)) for p in got.paths} <= expected
        assert [p.hops for p in got.paths] == sorted(p.hops for p in got.paths)


def test_http_explanations(tmp_path: Path) -> None:
    import asyncio

    import httpx

    from simkgcl.serving.app import create_app

    app = create_app(_toy(tmp_path))

    async def get(method: str, url: str, **kwargs: object) -> httpx.Response:
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
            return await client.request(method, url, **kwargs)

    resp = asyncio.run(get("GET", "/v1/users/alice/items/i0/explanation?max_paths=2"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["user"] == "alice" and body["explained"] is True
    assert [p["history_item"] for p in body["paths"]] == ["i3", "i1"]
    assert body["paths"][1]["text"].startswith("item i0 — directed_by → entity m.director")
    none = asyncio.run(get("GET", "/v1/users/alice/items/i2/explanation")).json()
    assert none["explained"] is False and "no KG link" in none["note"]
    assert asyncio.run(get("GET", "/v1/users/alice/items/zz/explanation")).status_code == 404
    # bob has seen only i0: i0 is left out, and every other item is explained against i0
    recs = asyncio.run(get("GET", "/v1/users/bob/recommendations?k=5&explain=true")).json()
    by_item = {r["item"]: r["explanation"] for r in recs["items"]}
    assert by_item["i4"]["paths"][0]["text"] == "item i4 — similar_to → item i0 (in your history)"
    assert by_item["i5"]["explained"] is False
    plain = asyncio.run(get("GET", "/v1/users/bob/recommendations?k=5")).json()
    assert all("explanation" not in r for r in plain["items"])
    batch = asyncio.run(get("POST", "/v1/recommendations",
                            json={"users": ["bob"], "k": 5, "explain": True})).json()
    assert batch["results"][0]["items"] == recs["items"]
    folded = asyncio.run(get("POST", "/v1/recommendations/for-items",
                             json={"items": ["i1"], "k": 5, "explain": True})).json()
    i0 = next(r for r in folded["items"] if r["item"] == "i0")
    assert i0["explanation"]["paths"][0]["history_item"] == "i1"
    paths = app.openapi()["paths"]
    assert set(paths["/v1/users/{user}/items/{item}/explanation"]["get"]["responses"]) == {
        "200", "404", "422"}


def test_kg_out_of_range_is_refused(tmp_path: Path) -> None:
    from simkgcl.errors import ArtifactError

    with pytest.raises(ArtifactError, match="kg_triples"):
        _toy(tmp_path, triples=[(0, 7, 6)])  # relation 7 of 4
    with pytest.raises(ArtifactError, match="kg_triples"):
        _toy(tmp_path, triples=[(0, 0, 10)])  # entity 10 of 10
    service = _toy(tmp_path)  # entity tokens may repeat ('' for unlinked items)
    assert service.artifact.entity_tokens[2] == "" and service.artifact.kg_triples.dtype == torch.int32
