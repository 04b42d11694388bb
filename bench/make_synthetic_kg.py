"""Make a SYNTHETIC knowledge graph shaped like amazon-book's (for speed/memory benchmarks only).

The real amazon-book KG (KGCL's kg.txt: 686,516 triples) is not available offline. This script
writes a KG of the same shape so that training cost can be measured at paper scale:

* exactly ``--triples`` distinct (head, relation, tail) triples (default 686,516);
* heads are items (0..n_items-1, every item gets at least one triple), shared id space
  (KGAT's ``kg_final.txt`` convention: item i is entity i);
* tails are ~``--tails`` KG-only entities (ids from n_items on), drawn Zipf-like;
* ``--relations`` relations (default 39) with Zipf-like frequencies.

Accuracy measured on it means nothing. The output folder also links the real train.txt and
test.txt, so it loads as a KGAT-layout dataset:

    python bench/make_synthetic_kg.py --data ../shared/datasets/amazon-book --out out/amazon-book-synkg
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np


def count_items(train_path: Path, test_path: Path) -> int:
    top = -1
    for path in (train_path, test_path):
        with open(path) as fh:
            for line in fh:
                parts = line.split()
                if len(parts) > 1:
                    top = max(top, max(int(x) for x in parts[1:]))
    return top + 1


def zipf_weights(n: int, exponent: float) -> np.ndarray:
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** exponent
    return w / w.sum()


def make_kg(n_items: int, n_triples: int, n_tails: int, n_relations: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    rel_p = zipf_weights(n_relations, 1.1)
    tail_p = zipf_weights(n_tails, 0.8)
    keys: set[tuple[int, int, int]] = set()
    out = np.empty((0, 3), dtype=np.int64)
    # every item gets at least one triple, the rest of the heads are uniform over items
    heads = np.concatenate([np.arange(n_items), rng.integers(0, n_items, n_triples - n_items)])
    while out.shape[0] < n_triples:
        need = n_triples - out.shape[0]
        h = heads[:need] if out.shape[0] == 0 else rng.integers(0, n_items, need)
        r = rng.choice(n_relations, size=need, p=rel_p)
        t = n_items + rng.choice(n_tails, size=need, p=tail_p)
        cand = np.stack([h, r, t], axis=1)
        fresh = []
        for row in map(tuple, cand):
            if row not in keys:
                keys.add(row)
                fresh.append(row)
        out = np.concatenate([out, np.asarray(fresh, dtype=np.int64).reshape(-1, 3)])
    return out[:n_triples]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data", required=True, help="amazon-book folder with train.txt and test.txt")
    ap.add_argument("--out", required=True)
    ap.add_argument("--triples", type=int, default=686_516)
    ap.add_argument("--tails", type=int, default=30_000)
    ap.add_argument("--relations", type=int, default=39)
    ap.add_argument("--seed", type=int, default=2020)
    args = ap.parse_args()

    data, out = Path(args.data).resolve(), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    n_items = count_items(data / "train.txt", data / "test.txt")
    kg = make_kg(n_items, args.triples, args.tails, args.relations, args.seed)
    np.savetxt(out / "kg_final.txt", kg, fmt="%d", delimiter=" ")
    for name in ("train.txt", "test.txt"):
        link = out / name
        if link.is_symlink() or link.exists():
            link.unlink()
        os.symlink(data / name, link)
    (out / "SYNTHETIC_KG.txt").write_text(
        f"kg_final.txt is SYNTHETIC (bench/make_synthetic_kg.py, seed {args.seed}): "
        f"{len(kg)} triples, {n_items} item heads, {len(np.unique(kg[:, 2]))} tails, "
        f"{len(np.unique(kg[:, 1]))} relations. Accuracy on it means nothing.\n"
    )
    print((out / "SYNTHETIC_KG.txt").read_text().strip())


if __name__ == "__main__":
    main()
