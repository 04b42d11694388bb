"""How often a recommended item has a KG explanation, and what one costs (issue 15).

For the first ``--users`` users of a run: top-``k`` recommendations, each explained against the
user's training items; prints the share of items with at least one path, the share whose best
path has 0/1/2 entities between, and the mean milliseconds per explanation (one thread).

    nice .venv/bin/python bench/bench_explain.py runs/simkgcl-lastfm-kg-... --users 300 --k 20
"""

from __future__ import annotations

import argparse
import json
import time
from collections import Counter

import torch

from simkgcl.serving.recommend import RecommendationService


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("--users", type=int, default=300)
    parser.add_argument("--k", type=int, default=20)
    args = parser.parse_args()
    torch.set_num_threads(1)
    service = RecommendationService.from_run_dir(args.run_dir)
    explainer = service.explainer
    users = service.artifact.user_tokens[: args.users]
    explained, total, seconds = 0, 0, 0.0
    best_hops: Counter[int] = Counter()
    for user, scored in zip(users, service.recommend_many(users, args.k), strict=True):
        history = service.artifact.seen_items(service.user_id(user)).numpy()
        for s in scored:
            start = time.perf_counter()
            got = explainer.explain(service.item_id(s.item), history)
            seconds += time.perf_counter() - start
            total += 1
            if got.explained:
                explained += 1
                best_hops[min(p.hops for p in got.paths)] += 1
    print(json.dumps({"run": args.run_dir, "users": len(users), "k": args.k,
                      "explained_share": round(explained / total, 3),
                      "best_path_entities": {h: round(n / total, 3)
                                             for h, n in sorted(best_hops.items())},
                      "ms_per_explanation": round(1000 * seconds / total, 2)}))


if __name__ == "__main__":
    main()
