"""Small artifacts with non-contiguous, non-numeric tokens so any id<->token mix-up shows."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from simkgcl.artifact import save_artifact

N_USERS, N_ITEMS, DIM = 40, 60, 8
# A user who has seen all but 3 items: with k > 3 and seen excluded, fewer than k come back.
GREEDY_USER = 5
COLD_USER = 7  # no training items at all


@dataclass
class ToyRun:
    run_dir: Path
    user_tokens: list[str]
    item_tokens: list[str]
    user_emb: np.ndarray
    item_emb: np.ndarray
    seen: list[set[int]]
    popularity: np.ndarray  # training interactions per item

    def brute_force(self, user_token: str, k: int, include_seen: bool = False) -> list[tuple[str, float]]:
        """Reference ranking: score every item in float64, drop seen, stable sort."""
        u = self.user_tokens.index(user_token)
        scores = self.item_emb.astype(np.float64) @ self.user_emb[u].astype(np.float64)
        order = [i for i in np.argsort(-scores, kind="stable")
                 if include_seen or i not in self.seen[u]]
        return [(self.item_tokens[i], float(scores[i])) for i in order[:k]]


def _toy_kg(rng: np.random.Generator) -> tuple[np.ndarray, list[str], list[str]]:
    """A random KG over the items and 20 more entities, so explanations have paths to find."""
    n_entities = N_ITEMS + 20
    triples = np.stack([rng.integers(0, n_entities, 150), rng.integers(0, 4, 150),
                        rng.integers(N_ITEMS, n_entities, 150)], axis=1)
    entities = [f"m.{i}/é" for i in range(n_entities)]
    return triples, entities, ["rel:a", "rel b", "rel/c", "rel-d"]


def make_toy_run(run_dir: Path, seed: int = 0, blend: dict | None = None) -> ToyRun:
    """The toy run; ``blend`` (a ``BlendTable.to_dict()``) is stored with the item counts."""
    rng = np.random.default_rng(seed)
    user_tokens = [f"user-{3 * i + 11}" for i in range(N_USERS)]
    user_tokens[3] = "odd/token with space"  # must survive CLI and URLs
    item_tokens = [f"i{(17 * i) % 101:03d}x" for i in range(N_ITEMS)]
    users, items = [], []
    for u in range(N_USERS):
        if u == COLD_USER:
            continue
        n = N_ITEMS - 3 if u == GREEDY_USER else int(rng.integers(1, 8))
        chosen = rng.choice(N_ITEMS, size=n, replace=False)
        users += [u] * n
        items += chosen.tolist()
    perm = rng.permutation(len(users))  # the trainer's order is arbitrary
    train_users, train_items = np.asarray(users)[perm], np.asarray(items)[perm]
    popularity = np.bincount(train_items, minlength=N_ITEMS)
    user_emb = rng.standard_normal((N_USERS, DIM)).astype(np.float32)
    item_emb = rng.standard_normal((N_ITEMS, DIM)).astype(np.float32)
    save_artifact(
        run_dir, model="SimKGCL", dataset="toy", config={"seed": seed, "embedding_size": DIM},
        metrics={"valid": {"recall@20": 0.2}, "test": {"recall@20": 0.25, "ndcg@20": 0.125}},
        user_tokens=np.asarray(user_tokens), item_tokens=item_tokens,
        user_embeddings=torch.from_numpy(user_emb), item_embeddings=torch.from_numpy(item_emb),
        train_users=train_users, train_items=train_items,
        kg=_toy_kg(rng),
        blend=blend,
        popularity=None if blend is None else torch.from_numpy(popularity.astype(np.float32)),
    )
    seen = [set() for _ in range(N_USERS)]
    for u, i in zip(train_users.tolist(), train_items.tolist(), strict=True):
        seen[u].add(i)
    return ToyRun(run_dir, user_tokens, item_tokens, user_emb, item_emb, seen, popularity)



def unwritable_folder(tmp_path: Path) -> Path:
    """A folder in which creating a file really fails for this user.

    chmod does not stop root (tests may run as root), so as root use /sys, where even root
    cannot create files; skip if neither way works on this machine.
    """
    import pytest

    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    for candidate in (locked, Path("/sys")):
        probe = candidate / ".simkgcl-probe"
        try:
            probe.touch(exist_ok=False)
        except OSError:
            return candidate
        probe.unlink()
    pytest.skip("no unwritable folder available on this machine")
