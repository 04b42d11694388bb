"""Full-ranking evaluation with held-out ranks counted vs with ``topk``: time and agreement.

The evaluator ranks a batch by counting, for each held-out item, the items scored above it,
whenever the batch holds few held-out items per row and no score ties
(:meth:`simkgcl.evaluation.Evaluator._hits_by_rank`); otherwise by ``topk``. This times one
whole evaluation of a model's validation (and test) split both ways, wall-clock best of
``--rounds``, with the model's final embeddings computed once outside the timing, and checks
that every metric agrees exactly. Each path is forced on every batch (the threshold set to
never / always count), so the figures show both sides of ``COUNT_RANKS_BELOW``; ``--sweep``
times them on random tables with 1 to 64 held-out items per user, where the break-even lies.

    python bench/eval_rank_count.py --model kgin --dataset ../shared/splits/lastfm-kg --threads 2
    python bench/eval_rank_count.py --sweep --threads 2
    python bench/eval_rank_count.py --buffers --threads 2   # fresh vs reused score memory
"""

from __future__ import annotations

import argparse
import logging
import time

import torch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="kgin")
    parser.add_argument("--dataset", default="../shared/splits/lastfm-kg")
    parser.add_argument("--checkpoint", help="a training checkpoint of that model and dataset")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=15, help="timed rounds (the best is kept)")
    parser.add_argument("--sweep", action="store_true",
                        help="instead: random tables, 4000 items, 1-64 held-out items per user")
    parser.add_argument("--buffers", action="store_true",
                        help="instead: the score product + one counting pass over 1858 x 3846 "
                             "random scores, fresh matrices per 1065-row batch vs ~260-row "
                             "steps into one reused buffer")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("simkgcl").setLevel(logging.WARNING)
    if args.sweep:
        return sweep(args.rounds)
    if args.buffers:
        return buffers(args.rounds)

    from simkgcl.config import Config
    from simkgcl.evaluation import Evaluator
    from simkgcl.evaluation.evaluator import _final_embeddings
    from simkgcl.training.checkpoint import load_checkpoint, load_model_weights
    from simkgcl.training.components import build_components, load_data

    config = Config({"model": args.model, "dataset": args.dataset, "show_progress": False})
    dataset, split = load_data(config)
    model = build_components(config, dataset, split, torch.device("cpu")).model
    if args.checkpoint:
        load_model_weights(model, load_checkpoint(args.checkpoint)["model"], args.checkpoint)
    user_emb, item_emb = _final_embeddings(model)
    evaluator = Evaluator.from_config(config, dataset.n_users, dataset.n_items, "cpu")
    tasks = {"valid": evaluator.task(split.valid, [split.train]),
             "test": evaluator.task(split.test, [split.train, split.valid])}
    print(f"{args.model} on {args.dataset}, {args.threads} threads, {dataset.n_items} items, "
          f"{evaluator.users_per_batch} users per batch, metrics {evaluator.metrics} "
          f"@ {evaluator.topk}; best of {args.rounds}")
    for name, task in tasks.items():
        per_row = task.pos_keys.numel() / max(1, task.n_rows)
        timings, results = _timed(evaluator, user_emb, item_emb, task, args.rounds)
        same = results["topk"] == results["counting"]
        print(f"{name}: {task.n_rows} users, {per_row:.2f} held-out items per user: "
              f"topk {timings['topk'] * 1e3:.1f} ms, counting {timings['counting'] * 1e3:.1f} ms "
              f"-> {timings['topk'] / timings['counting']:.2f}x; metrics identical: {same}")
        _print_diff(results, same)


def _print_diff(results: dict, same: bool) -> None:
    if not same:
        diff = {k: (results["topk"][k], results["counting"][k]) for k in results["topk"]
                if results["topk"][k] != results["counting"][k]}
        print(f"  differing: {diff}")


def _timed(evaluator, user_emb, item_emb, task, rounds: int) -> tuple[dict, dict]:
    timings, results = {}, {}
    for label, threshold in (("topk", -1.0), ("counting", float("inf"))):
        evaluator.count_ranks_below = threshold
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            results[label] = evaluator.evaluate_embeddings(user_emb, item_emb, task)
            best = min(best, time.perf_counter() - start)
        timings[label] = best
    return timings, results


def buffers(rounds: int) -> None:
    """Why the evaluator computes scores in steps into one reused buffer on CPU."""
    n_users, n_items, rows = 1858, 3846, 1065
    gen = torch.Generator().manual_seed(0)
    users = torch.randn(n_users, 64, generator=gen)
    items_t = torch.randn(n_items, 64, generator=gen).t()
    heldout = torch.randn(n_users, 1, generator=gen)

    def fresh() -> None:
        for s in range(0, n_users, rows):
            scores = users[s:s + rows] @ items_t
            (scores > heldout[s:s + rows]).to(torch.float32).sum(1)

    step = (1 << 20) // n_items
    score_buf, flag_buf = torch.empty(step, n_items), torch.empty(step, n_items)

    def reused() -> None:
        for s in range(0, n_users, step):
            m = min(step, n_users - s)
            scores = torch.mm(users[s:s + m], items_t, out=score_buf[:m])
            torch.gt(scores, heldout[s:s + m], out=flag_buf[:m]).sum(1)

    for name, run in (("fresh 1065-row matrices", fresh), (f"reused {step}-row steps", reused)):
        best = float("inf")
        for _ in range(rounds):
            start = time.perf_counter()
            run()
            best = min(best, time.perf_counter() - start)
        print(f"{name}: {best * 1e3:.1f} ms (score product + one counting pass, {n_users} users)")


def sweep(rounds: int) -> None:
    """Where counting stops paying: random tables (no ties), 2000 users, 4000 items, K <= 50."""
    import numpy as np

    from simkgcl.data.dataset import Interactions
    from simkgcl.evaluation import Evaluator

    n_users, n_items, rng = 2000, 4000, np.random.default_rng(0)
    user_emb = torch.from_numpy(rng.normal(size=(n_users, 64))).float()
    item_emb = torch.from_numpy(rng.normal(size=(n_items, 64))).float()
    train_items = rng.permuted(np.tile(np.arange(n_items), (n_users, 1)), axis=1)
    evaluator = Evaluator(n_users, n_items, metrics=["Recall", "NDCG"], topk=[10, 20, 50],
                          eval_batch_size=4096000)
    print(f"sweep: {n_users} users, {n_items} items, 20 training items per user, best of {rounds}")
    for per_user in (1, 4, 8, 16, 32, 64):
        users = np.repeat(np.arange(n_users), per_user)
        heldout = Interactions(users, train_items[:, 20:20 + per_user].reshape(-1))
        train = Interactions(np.repeat(np.arange(n_users), 20), train_items[:, :20].reshape(-1))
        task = evaluator.task(heldout, [train])
        timings, results = _timed(evaluator, user_emb, item_emb, task, rounds)
        print(f"{per_user:3d} held-out items per user: topk {timings['topk'] * 1e3:.1f} ms, "
              f"counting {timings['counting'] * 1e3:.1f} ms "
              f"-> {timings['topk'] / timings['counting']:.2f}x; metrics identical: "
              f"{results['topk'] == results['counting']}")


if __name__ == "__main__":
    main()
