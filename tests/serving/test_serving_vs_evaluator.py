"""The artifact's rankings are the evaluator's rankings: what users get is what was measured."""

from __future__ import annotations

import numpy as np
from serving_fixtures import N_ITEMS, N_USERS, ToyRun

from simkgcl.artifact import load_artifact
from simkgcl.data.dataset import Interactions
from simkgcl.evaluation import Evaluator
from simkgcl.serving import RecommendationService


def test_service_top_k_equals_evaluator_top_k(toy_run: ToyRun) -> None:
    art = load_artifact(toy_run.run_dir)
    service = RecommendationService(art)
    # Held-out positives: one unseen item per user (who gets evaluated); exclude = training.
    rng = np.random.default_rng(3)
    test_users, test_items = [], []
    for u in range(N_USERS):
        unseen = sorted(set(range(N_ITEMS)) - toy_run.seen[u])
        test_users.append(u)
        test_items.append(int(rng.choice(unseen)))
    train_u = np.repeat(np.arange(N_USERS), [len(s) for s in toy_run.seen])
    train_i = np.asarray([i for s in toy_run.seen for i in sorted(s)], dtype=np.int64)
    k = 10
    evaluator = Evaluator(N_USERS, N_ITEMS, metrics=["Recall"], topk=[k], eval_batch_size=7 * N_ITEMS)
    task = evaluator.task(Interactions(users=np.asarray(test_users), items=np.asarray(test_items)),
                          exclude=[Interactions(users=train_u, items=train_i)])
    expected = evaluator.top_items(art.user_embeddings, art.item_embeddings, task).numpy()

    top = service.top_k_ids(task.users.numpy(), k)
    for row in range(task.n_rows):
        n = int(top.counts[row])  # the evaluator pads short lists with -inf items; compare real ones
        assert top.items[row, :n].tolist() == expected[row, :n].tolist()
    assert (top.counts < k).sum() == 1  # the greedy user, and the comparison covered the rest fully
