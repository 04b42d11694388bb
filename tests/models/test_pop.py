"""The pop model: training counts as scores, no epochs, and the whole run path (train, evaluate,
recommend) against a hand computation on a catalogue where every item's count differs."""

from __future__ import annotations

import json
import math
from pathlib import Path

import torch

from simkgcl.cli import main
from simkgcl.models import get_model_class
from simkgcl.serving.recommend import RecommendationService
from tests.models.toy_graph import toy_graph

N_USERS, N_ITEMS = 9, 10


def test_scores_are_training_counts_and_nothing_is_trainable() -> None:
    graph = toy_graph()  # items 0..5 counted by hand from toy_graph's interactions
    model = get_model_class("pop")(graph, {})
    users, items = model.final_embeddings()
    scores = users @ items.t()
    expected = torch.tensor([2.0, 3.0, 2.0, 3.0, 1.0, 2.0])
    assert torch.equal(scores, expected.expand(graph.n_users, -1))
    assert not any(p.requires_grad for p in model.parameters())


def _write(folder: Path) -> tuple[dict[int, set[int]], dict[int, int], dict[int, int]]:
    """Item j has 9 - j training users among 0..8 (counts 9..0, all different); every user
    has one test item outside its training items and, if it has two, one valid item."""
    folder.mkdir(parents=True)
    train = {u: {j for j in range(N_ITEMS) if u < N_USERS - j} for u in range(N_USERS)}
    valid, test = {}, {}
    for u in range(N_USERS):
        unseen = [j for j in range(N_ITEMS) if j not in train[u]]
        test[u] = unseen[-1]
        if len(unseen) > 1:
            valid[u] = unseen[0]
    head = "user_id:token\titem_id:token\n"
    for part, rows in (("train", [(u, j) for u in train for j in sorted(train[u])]),
                       ("valid", list(valid.items())), ("test", list(test.items()))):
        (folder / f"toy.{part}.inter").write_text(head + "".join(f"u{u}\ti{j}\n"
                                                                  for u, j in rows))
    return train, valid, test


def test_pop_trains_no_epoch_and_its_metrics_match_a_hand_ranking(tmp_path: Path,
                                                                  capsys) -> None:
    train, valid, test = _write(tmp_path / "toy")
    code = main(["train", "--dataset", str(tmp_path / "toy"), "--model", "pop", "--json",
                 "show_progress=false", "topk=[3]", "metrics=[NDCG]", "valid_metric=NDCG@3",
                 f"checkpoint_dir={tmp_path / 'runs'}", "device=cpu"])
    assert code == 0
    result = json.loads(capsys.readouterr().out)
    count = {j: sum(j in items for items in train.values()) for j in range(N_ITEMS)}

    def ndcg(u: int, target: int, hidden: set[int]) -> float:
        ranked = sorted((j for j in range(N_ITEMS) if j not in hidden), key=lambda j: -count[j])
        pos = ranked.index(target)
        return 1 / math.log2(pos + 2) if pos < 3 else 0.0

    want = sum(ndcg(u, test[u], train[u] | ({valid[u]} if u in valid else set())) for u in test) / N_USERS
    assert math.isclose(result["test"]["NDCG@3"], want, rel_tol=1e-6)
    assert result["epochs_run"] == 0
    run = Path(result["run_dir"])
    assert main(["evaluate", str(run), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == result["test"]
    service = RecommendationService.from_run_dir(run)
    top = [s.item for s in service.recommend("u8", k=3)]  # u8 saw item 0 only
    assert top == ["i1", "i2", "i3"]
