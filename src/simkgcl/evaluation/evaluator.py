"""Full-ranking evaluation: every item is scored for every evaluated user.

For a batch of users the scores are one matrix product ``user_emb[batch] @ item_emb.T`` on the
device; items the user must not be credited for (training items, and validation items when
testing) get ``-inf``; ``topk`` gives the ranked lists, and membership of the held-out items gives
the hits matrix the metrics are computed from. When the metrics need the hits alone (no
ItemCoverage) and users hold few held-out items, the hits come instead from each held-out item's
position = the number of items scored strictly above it, counted without sorting; a batch where
that position is ambiguous (a held-out item that could be listed ties with another item, or a
NaN) is ranked by ``topk`` after all, so the metrics are always those of the ``topk`` path. On
lastfm-kg's validation (one held-out item per user) this makes the evaluation ~1.7x faster
(bench/eval_rank_count.py; the score product is then most of the time).

The number of users per batch follows from a budget of score cells (``eval_batch_size``,
RecBole's meaning), so memory stays bounded whatever the catalogue size. The index structures of a split are built once (:meth:`Evaluator.task`) and
reused at every validation.

With ``world_size > 1`` each rank evaluates its contiguous share of the users and the sums are
all-reduced, so every rank returns the same metrics as one process would.

Per-user values (for user groups and paired significance tests) come from the same pass through
:meth:`Evaluator.evaluate_per_user`; the plain :meth:`Evaluator.evaluate` that validation calls
every epoch never keeps them.

Every entry point takes an optional ``transform``: a :data:`ScoreTransform` applied to each
batch's raw scores before exclusions and top-k (the fitted popularity blend of
:mod:`simkgcl.calibration`, so evaluation ranks exactly what serving ranks).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from simkgcl.data.dataset import Interactions
from simkgcl.errors import ConfigError
from simkgcl.evaluation.metrics import RANKING_METRICS, per_user_metrics
from simkgcl.evaluation.per_user import PerUserMetrics
from simkgcl.models.base import Recommender
from simkgcl.sampling.negative import rank_share

# Held-out items per evaluated row up to which a batch is ranked by counting, not topk. Measured
# with bench/eval_rank_count.py (2 threads, CPU): random tables over 4000 items, counting is 1.6x
# faster at 1 per row, 1.0x at 4, 0.9x at 8, 0.7x at 16; ml-100k's 10.2 per row over 1682 items,
# 1.3-1.4x; lastfm-kg's 1.03 per row over 3846 items, 1.7x.
COUNT_RANKS_BELOW = 12.0

# On CPU, score cells computed per step into one reused buffer (~4 MB of float32: it stays in
# cache while it is ranked). A fresh 1,065 x 3,846 score matrix per batch costs about as much in
# page faults as its product: product + one counting pass over 1858 x 3846 scores, 16.8 ms with
# fresh 1065-row matrices, 8.7 ms in reused 272-row steps (bench/eval_rank_count.py --buffers).
CPU_SCORE_CELLS = 1 << 20

# (user ids of the rows (B,), raw scores (B, n_items)) -> the scores to rank (B, n_items)
ScoreTransform = Callable[[Tensor, Tensor], Tensor]


@dataclass
class RankingTask:
    """Who is evaluated on what, as device tensors indexed by evaluation row.

    Row ``r`` is user ``users[r]``. Held-out items are kept as sorted keys ``r * n_items + item``
    (membership by binary search); excluded items as (row, item) pairs sorted by row, with a
    host-side ``exclude_indptr`` so that a batch of rows is sliced without a device sync.
    """

    users: Tensor  # (n_rows,) int64, on device
    n_pos: Tensor  # (n_rows,) int64, on device
    pos_keys: Tensor  # (n_pos_total,) int64 sorted, on device
    pos_indptr: np.ndarray  # (n_rows + 1,) int64, on host: row r's keys are pos_keys[p[r]:p[r+1]]
    exclude_rows: Tensor  # (n_excl,) int64, on device
    exclude_items: Tensor  # (n_excl,) int64, on device
    exclude_indptr: np.ndarray  # (n_rows + 1,) int64, on host
    row_offset: int  # first global row of this rank's share (0 without sharding)
    n_rows_total: int  # rows over all ranks

    @property
    def n_rows(self) -> int:
        return int(self.users.shape[0])


class Evaluator:
    """Computes ``metrics`` at every K in ``topk`` for a model or a pair of embedding tables."""

    def __init__(
        self,
        n_users: int,
        n_items: int,
        *,
        metrics: Sequence[str],
        topk: Sequence[int],
        eval_batch_size: int,
        device: torch.device | str = "cpu",
        rank: int = 0,
        world_size: int = 1,
    ) -> None:
        self.n_users = n_users
        self.n_items = n_items
        self.metrics = list(metrics)
        self.topk = sorted(set(topk))
        self.max_k = self.topk[-1]
        if self.max_k > n_items:
            raise ConfigError(f"config key 'topk': K={self.max_k} is larger than the number of "
                              f"items ({n_items})")
        self.device = torch.device(device)
        self.rank = rank
        self.world_size = world_size
        # Budget of score cells per batch -> users per batch (at least one user).
        self.users_per_batch = max(1, int(eval_batch_size) // max(1, n_items))
        # Rows scored per step: the budget, and on CPU at most CPU_SCORE_CELLS cells.
        self.rows_per_step = self.users_per_batch if self.device.type != "cpu" else \
            max(1, min(self.users_per_batch, CPU_SCORE_CELLS // max(1, n_items)))
        # Rank by counting (not topk) while a batch holds at most this many held-out items per
        # row (about where the two break even on CPU).
        self.count_ranks_below = COUNT_RANKS_BELOW

    @classmethod
    def from_config(cls, config, n_users: int, n_items: int, device: torch.device | str,
                    rank: int = 0, world_size: int = 1) -> Evaluator:
        """Evaluator for the config's metrics (plus the valid_metric's, if not listed)."""
        metrics = list(config["metrics"])
        valid_name = config["valid_metric"].split("@")[0]
        if valid_name not in metrics:
            metrics.append(valid_name)
        return cls(n_users, n_items, metrics=metrics, topk=config["topk"],
                   eval_batch_size=config["eval_batch_size"], device=device, rank=rank,
                   world_size=world_size)

    # -- building the index of one split ------------------------------------------------------

    def task(self, positives: Interactions, exclude: Sequence[Interactions] = ()) -> RankingTask:
        """Index held-out ``positives``; items in ``exclude`` are never credited or recommended."""
        n_items = self.n_items
        pos_u = np.asarray(positives.users, dtype=np.int64)
        pos_i = np.asarray(positives.items, dtype=np.int64)
        pair = np.unique(pos_u * n_items + pos_i)  # de-duplicated, sorted by user then item
        pair_users = pair // n_items
        users_all, counts_all = np.unique(pair_users, return_counts=True)
        start, end = rank_share(len(users_all), self.rank, self.world_size)
        users = users_all[start:end]
        counts = counts_all[start:end]
        # rows of this share: keys relative to the share's first row
        row_of_user = np.full(self.n_users, -1, dtype=np.int64)
        row_of_user[users] = np.arange(len(users), dtype=np.int64)
        pair_rows = row_of_user[pair_users]
        keep = pair_rows >= 0
        pos_keys = pair_rows[keep] * n_items + (pair[keep] % n_items)

        if exclude:
            ex_u = np.concatenate([np.asarray(e.users, dtype=np.int64) for e in exclude])
            ex_i = np.concatenate([np.asarray(e.items, dtype=np.int64) for e in exclude])
        else:
            ex_u = ex_i = np.zeros(0, dtype=np.int64)
        ex_rows = row_of_user[ex_u] if len(ex_u) else ex_u
        keep_ex = ex_rows >= 0
        ex_rows, ex_i = ex_rows[keep_ex], ex_i[keep_ex]
        order = np.argsort(ex_rows, kind="stable")
        ex_rows, ex_i = ex_rows[order], ex_i[order]
        indptr = np.zeros(len(users) + 1, dtype=np.int64)
        np.cumsum(np.bincount(ex_rows, minlength=len(users)), out=indptr[1:])

        dev = self.device
        return RankingTask(
            users=torch.from_numpy(users).to(dev),
            n_pos=torch.from_numpy(counts).to(dev),
            pos_keys=torch.from_numpy(pos_keys).to(dev),
            pos_indptr=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            exclude_rows=torch.from_numpy(ex_rows).to(dev),
            exclude_items=torch.from_numpy(ex_i).to(dev),
            exclude_indptr=indptr,
            row_offset=start,
            n_rows_total=len(users_all),
        )

    # -- evaluation ---------------------------------------------------------------------------

    def evaluate(self, model: Recommender, task: RankingTask,
                 transform: ScoreTransform | None = None) -> dict[str, float]:
        """Metrics of ``model`` on ``task``; its final embeddings are computed once."""
        return self.evaluate_embeddings(*_final_embeddings(model), task, transform)

    def evaluate_per_user(self, model: Recommender, task: RankingTask,
                          transform: ScoreTransform | None = None
                          ) -> tuple[dict[str, float], PerUserMetrics]:
        """:meth:`evaluate` plus every evaluated user's value of each ranking metric (one pass;
        under DDP every rank receives all users)."""
        return self.evaluate_embeddings_per_user(*_final_embeddings(model), task, transform)

    def _batches(self, task: RankingTask, user_emb: Tensor, item_emb: Tensor,
                 transform: ScoreTransform | None = None, *, need_items: bool = True):
        """Yield (start, end, top item ids or None, hits) for each batch of evaluation rows.

        With ``need_items=False`` (metrics that depend on the hits alone) a batch whose rows hold
        few held-out items is ranked by counting instead of ``topk``: see :meth:`_hits_by_rank`.
        """
        user_emb, item_t = user_emb.detach(), item_emb.detach().t()  # nothing is differentiated
        n_items = self.n_items
        step = self.rows_per_step
        # one score buffer for every step (see CPU_SCORE_CELLS)
        buffer = torch.empty(min(step, task.n_rows), n_items, dtype=user_emb.dtype,
                             device=user_emb.device)
        workspace = _workspace(n_items, user_emb.dtype, user_emb.device) \
            if not need_items and user_emb.device.type == "cpu" else None
        for start in range(0, task.n_rows, step):
            end = min(start + step, task.n_rows)
            batch_users = task.users[start:end]
            scores = torch.mm(user_emb[batch_users], item_t, out=buffer[: end - start])
            if transform is not None:
                scores = transform(batch_users, scores)
            lo, hi = int(task.exclude_indptr[start]), int(task.exclude_indptr[end])
            if hi > lo:
                scores[task.exclude_rows[lo:hi] - start, task.exclude_items[lo:hi]] = float("-inf")
            n_heldout = int(task.pos_indptr[end] - task.pos_indptr[start])
            if not need_items and n_heldout <= self.count_ranks_below * (end - start):
                hits = self._hits_by_rank(scores, start, end, task, workspace)
                if hits is not None:
                    yield start, end, None, hits
                    continue
            top_scores, top_items = torch.topk(scores, self.max_k, dim=1)
            rows = torch.arange(start, end, device=scores.device).unsqueeze(1)
            keys = rows * n_items + top_items
            if task.pos_keys.numel():
                where = torch.searchsorted(task.pos_keys, keys).clamp_(max=task.pos_keys.numel() - 1)
                hits = (task.pos_keys[where] == keys) & torch.isfinite(top_scores)
            else:
                hits = torch.zeros_like(keys, dtype=torch.bool)
            yield start, end, top_items, hits

    def _hits_by_rank(self, scores: Tensor, start: int, end: int, task: RankingTask,
                      workspace: tuple[Tensor, Tensor] | None = None) -> Tensor | None:
        """The hits matrix of rows ``start:end`` without sorting: a held-out item's position in
        the ranked list is the number of items scored strictly higher than it.

        That is the position ``topk`` gives it unless another item has exactly its score. Ties
        matter only for an item that could be listed (fewer than max K items above it): when
        one of those ties (popularity scores tie often), or a row holds a NaN, None is returned
        and the caller ranks the batch with ``topk`` as before, so the metrics are the same
        either way. Held-out items scored ``±inf`` are never credited, as in the ``topk`` path.
        Each row's first held-out item is compared with the score matrix in place; only the
        others' rows (and the listable items' rows, for the tie check) are gathered.
        """
        lo, hi = int(task.pos_indptr[start]), int(task.pos_indptr[end])
        device = scores.device
        hits = torch.zeros(end - start, self.max_k, dtype=torch.bool, device=device)
        if hi == lo:
            return hits
        if bool(torch.isnan(scores.sum(1)).any()):  # NaN anywhere (or +inf beside -inf)
            return None
        keys = task.pos_keys[lo:hi]
        rows = torch.div(keys, self.n_items, rounding_mode="floor") - start
        heldout = scores[rows, keys - (rows + start) * self.n_items]
        # every row holds at least one held-out item (rows are the users that have some)
        first = torch.from_numpy(task.pos_indptr[start:end] - lo).to(device)
        higher = torch.empty(hi - lo, dtype=torch.long, device=device)
        higher[first] = _count(scores, None, heldout[first], torch.gt, workspace).long()
        others = torch.ones(hi - lo, dtype=torch.bool, device=device)
        others[first] = False
        others = others.nonzero().squeeze(1)
        higher[others] = _count(scores, rows[others], heldout[others], torch.gt,
                                workspace).long()
        listable = (torch.isfinite(heldout) & (higher < self.max_k)).nonzero().squeeze(1)
        equal = _count(scores, rows[listable], heldout[listable], torch.eq, workspace)
        if bool((equal > 1).any()):
            return None
        hits[rows[listable], higher[listable]] = True
        return hits

    def evaluate_embeddings(self, user_emb: Tensor, item_emb: Tensor, task: RankingTask,
                            transform: ScoreTransform | None = None) -> dict[str, float]:
        """Metrics for scores ``user_emb @ item_emb.T`` (tables already on the device)."""
        return self._evaluate(user_emb, item_emb, task, None, transform)

    def evaluate_embeddings_per_user(
            self, user_emb: Tensor, item_emb: Tensor, task: RankingTask,
            transform: ScoreTransform | None = None) -> tuple[dict[str, float], PerUserMetrics]:
        """:meth:`evaluate_embeddings` plus the per-user values behind its averages."""
        parts: list[dict[str, Tensor]] = []
        metrics = self._evaluate(user_emb, item_emb, task, parts, transform)
        names = [f"{m}@{k}" for m in self.metrics if m in RANKING_METRICS for k in self.topk]
        values = {n: torch.cat([p[n] for p in parts]).cpu().numpy() if parts
                  else np.zeros(0) for n in names}
        per_user = PerUserMetrics(users=task.users.cpu().numpy(),
                                  n_heldout=task.n_pos.cpu().numpy(), values=values)
        if self.world_size > 1 and torch.distributed.is_available() and \
                torch.distributed.is_initialized():
            shares: list[PerUserMetrics | None] = [None] * self.world_size
            torch.distributed.all_gather_object(shares, per_user)  # ranks hold contiguous shares
            per_user = PerUserMetrics.concat([s for s in shares if s is not None])
        return metrics, per_user

    def _evaluate(self, user_emb: Tensor, item_emb: Tensor, task: RankingTask,
                  keep: list[dict[str, Tensor]] | None,
                  transform: ScoreTransform | None = None) -> dict[str, float]:
        """Averages over the task's users; ``keep`` (a list) receives each batch's per-user
        values."""
        user_emb = user_emb.to(self.device)
        item_emb = item_emb.to(self.device)
        ranking = [m for m in self.metrics if m in RANKING_METRICS]
        names = [f"{m}@{k}" for m in ranking for k in self.topk]
        sums = torch.zeros(len(names), dtype=torch.float64, device=self.device)
        want_coverage = "ItemCoverage" in self.metrics
        covered = (torch.zeros(len(self.topk), self.n_items, dtype=torch.bool, device=self.device)
                   if want_coverage else None)
        batches = self._batches(task, user_emb, item_emb, transform,
                                need_items=want_coverage)
        for start, end, top_items, hits in batches:
            if ranking:
                values = per_user_metrics(hits, task.n_pos[start:end], ranking, self.topk)
                sums += torch.stack([values[n].sum() for n in names])
                if keep is not None:
                    keep.append(values)
            if covered is not None:
                for j, k in enumerate(self.topk):
                    covered[j, top_items[:, :k].reshape(-1)] = True
        count = torch.tensor([float(task.n_rows)], dtype=torch.float64, device=self.device)
        if self.world_size > 1 and torch.distributed.is_available() and \
                torch.distributed.is_initialized():
            torch.distributed.all_reduce(sums)
            torch.distributed.all_reduce(count)
            if covered is not None:
                cov = covered.to(torch.uint8)
                torch.distributed.all_reduce(cov, op=torch.distributed.ReduceOp.MAX)
                covered = cov.bool()
        n_users = float(count.item())
        values = (sums / n_users).tolist() if n_users > 0 else [0.0] * len(names)
        per_name = dict(zip(names, values, strict=True))
        if covered is not None:
            cov_values = (covered.sum(1).to(torch.float64) / self.n_items).tolist()
            for j, k in enumerate(self.topk):
                per_name[f"ItemCoverage@{k}"] = cov_values[j]
        # Report in the order the metrics were asked for, each at every K.
        return {f"{m}@{k}": per_name[f"{m}@{k}"] for m in self.metrics for k in self.topk}

    def top_items(self, user_emb: Tensor, item_emb: Tensor, task: RankingTask,
                  transform: ScoreTransform | None = None) -> Tensor:
        """(n_rows, max K) ranked item ids for the task's users, exactly as evaluation ranks them."""
        parts = [top for _, _, top, _ in self._batches(task, user_emb.to(self.device),
                                                        item_emb.to(self.device), transform)]
        if not parts:
            return torch.zeros(0, self.max_k, dtype=torch.long, device=self.device)
        return torch.cat(parts)


_COUNT_CHUNK_ROWS = 256  # rows compared at once: the buffer stays in cache (1.6x vs all rows)


def _count(scores: Tensor, rows: Tensor | None, values: Tensor, compare,
           workspace: tuple[Tensor, Tensor] | None = None) -> Tensor:
    """``counts[j]`` = how many entries x of score row ``rows[j]`` (row ``j`` when ``rows`` is
    None) have ``compare(x, values[j])``, as floats (exact: below 2**24 items in float32).

    With a ``workspace`` (CPU: :func:`_workspace`) the gathered rows and the comparison go into
    its two reused buffers, and the comparison is written as floats and summed: ~2x faster on
    CPU than summing the boolean tensor (3.0 vs 6.8 ms for 1065 x 3846 scores, 2 threads), and
    no fresh memory is touched per chunk (page faults cost as much as the comparison).
    Without one (other devices) the booleans are summed."""
    n, chunk = values.numel(), _count_rows(scores.shape[1])
    dtype = workspace[1].dtype if workspace is not None else _count_dtype(scores.shape[1])
    counts = torch.empty(n, dtype=dtype, device=scores.device)
    for c in range(0, n, chunk):
        m = min(chunk, n - c)
        value = values[c:c + m].unsqueeze(1)
        if rows is None:
            block = scores[c:c + m]
        elif workspace is None:
            block = scores.index_select(0, rows[c:c + m])
        else:
            block = torch.index_select(scores, 0, rows[c:c + m], out=workspace[0][:m])
        if workspace is None:
            counts[c:c + m] = compare(block, value).sum(1)
        else:
            torch.sum(compare(block, value, out=workspace[1][:m]), 1, out=counts[c:c + m])
    return counts


def _count_rows(n_items: int) -> int:
    """Score rows compared at once: 256, fewer for a catalogue over ~4,000 items (so that a
    chunk stays within CPU_SCORE_CELLS cells whatever the catalogue size)."""
    return max(1, min(_COUNT_CHUNK_ROWS, CPU_SCORE_CELLS // max(1, n_items)))


def _count_dtype(n_items: int) -> torch.dtype:
    return torch.float32 if n_items < 2 ** 24 else torch.float64


def _workspace(n_items: int, dtype: torch.dtype, device: torch.device) -> tuple[Tensor, Tensor]:
    """Reused buffers of :func:`_count`: gathered score rows, and comparison results."""
    rows = _count_rows(n_items)
    return (torch.empty(rows, n_items, dtype=dtype, device=device),
            torch.empty(rows, n_items, dtype=_count_dtype(n_items), device=device))


def _final_embeddings(model: Recommender) -> tuple[Tensor, Tensor]:
    """The model's scoring tables, computed in eval mode without gradients."""
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            return model.final_embeddings()
    finally:
        model.train(was_training)
