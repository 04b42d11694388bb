"""Approximate vs exact top-k on a synthetic catalogue (issue 15, part 3).

SYNTHETIC data: item and query (user) rows are seeded standard-normal draws, ``--items`` x
``--dim`` (default 1,000,000 x 64). That is a hard case for an ANN index: random directions have
no cluster structure, so recall at a given effort is lower than on trained embeddings. Every query
also excludes ``--seen`` random items (as a user's training items), through the same
over-fetch-and-filter path the service uses.

For each index: build time, resident memory added by the build, queries/s and p50/p95 latency
with ``--concurrency`` threads each sending single-user queries, and recall@k against the exact
top-k with the same exclusions.

    nice .venv/bin/python bench/bench_ann.py --items 1000000 --dim 64 --queries 1000
"""

from __future__ import annotations

import argparse
import json
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from simkgcl.serving import index as ann


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


def timed_queries(idx: ann.ItemIndex, queries: torch.Tensor, seen: list[np.ndarray], k: int,
                  concurrency: int) -> tuple[np.ndarray, list[float], float]:
    """(top-k ids per query, per-query latencies in s, wall seconds), single-query requests."""
    def one(q: int) -> tuple[np.ndarray, float]:
        start = time.perf_counter()
        items, _, counts = ann.top_k_excluding(idx, queries[q : q + 1], k, [seen[q]])
        return items[0, : counts[0]], time.perf_counter() - start

    start = time.perf_counter()
    with ThreadPoolExecutor(concurrency) as pool:
        results = list(pool.map(one, range(len(queries))))
    wall = time.perf_counter() - start
    return np.asarray([r[0] for r in results], dtype=object), [r[1] for r in results], wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--items", type=int, default=1_000_000)
    parser.add_argument("--dim", type=int, default=64)
    parser.add_argument("--queries", type=int, default=1000)
    parser.add_argument("--exact-queries", type=int, default=200,
                        help="queries timed for exact scoring (it is slow); recall uses all")
    parser.add_argument("--k", type=int, default=20)
    parser.add_argument("--seen", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--threads", type=int, default=2, help="torch/faiss threads")
    parser.add_argument("--kinds", default="exact,hnsw,ivf")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--ef-search", type=lambda t: [int(x) for x in t.split(",")],
                        default=[128, 512], help="hnsw efSearch values to time")
    parser.add_argument("--nprobe", type=lambda t: [int(x) for x in t.split(",")],
                        default=[16, 64, 256], help="ivf nprobe values to time")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(args.seed)
    items = torch.from_numpy(rng.standard_normal((args.items, args.dim), dtype=np.float32))
    queries = torch.from_numpy(rng.standard_normal((args.queries, args.dim), dtype=np.float32))
    seen = [rng.choice(args.items, args.seen, replace=False) for _ in range(args.queries)]
    exact = ann.ItemIndex(items)
    truth = []
    for start in range(0, args.queries, 100):  # batched ground truth
        batch = slice(start, start + 100)
        top, _, _ = ann.top_k_excluding(exact, queries[batch], args.k, seen[batch])
        truth += [set(row.tolist()) for row in top]
    print(json.dumps({"synthetic": "seeded standard-normal rows", "items": args.items,
                      "dim": args.dim, "queries": args.queries, "k": args.k,
                      "seen_per_query": args.seen, "concurrency": args.concurrency,
                      "threads": args.threads}), flush=True)
    for kind in args.kinds.split(","):
        before = rss_mb()
        start = time.perf_counter()
        idx = exact if kind == "exact" else ann.build_index(items, kind, seed=args.seed,
                                                            threads=args.threads)
        build = time.perf_counter() - start
        added = rss_mb() - before
        if kind != "exact":
            ann.import_faiss().omp_set_num_threads(1)  # one thread per single-user query
        efforts = {"exact": [0], "hnsw": args.ef_search, "ivf": args.nprobe}[kind]
        for effort in efforts:
            if effort:
                idx.set_search_effort(effort)  # type: ignore[attr-defined]
            n = args.exact_queries if kind == "exact" else args.queries
            got, lat, wall = timed_queries(idx, queries[:n], seen[:n], args.k, args.concurrency)
            recall = float(np.mean([len(truth[q] & set(got[q].tolist())) / args.k
                                    for q in range(n)]))
            leaked = sum(len(set(got[q].tolist()) & set(seen[q].tolist())) for q in range(n))
            print(json.dumps({**idx.describe(), "build_s": round(build, 1),
                              "memory_added_mb": round(added), "queries": n,
                              "queries_per_s": round(n / wall, 1),
                              "p50_ms": round(1000 * float(np.percentile(lat, 50)), 2),
                              "p95_ms": round(1000 * float(np.percentile(lat, 95)), 2),
                              f"recall@{args.k}": round(recall, 4),
                              "seen_items_returned": leaked}), flush=True)
        if kind != "exact":
            ann.import_faiss().omp_set_num_threads(args.threads)


if __name__ == "__main__":
    main()
