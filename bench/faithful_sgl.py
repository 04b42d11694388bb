"""Our SGL against RecBole 1.2.1's SGL on a real split: same weights, same augmented graphs.

For each augmentation (ED, ND, RW): RecBole's SGL is built on ``../shared/splits/<split>`` as its
trainer would (seed 2020); our SGL on the same split files gets RecBole's initial user and item
rows, matched by original token (RecBole's [PAD] rows have no counterpart). RecBole draws its two
augmented graphs (``model.train()``, numpy seeded); their kept interactions, mapped to our ids by
token, are given to our model (``SGL.set_views``), which renormalises them with its own code.
Then, on RecBole's first training batch (mapped by token), we compare:

* the three views (main, view 1, view 2: every user and item row);
* each loss term: ``bpr`` (RecBole's ``calc_bpr_loss`` with the L2 weight set to 0), ``reg``
  (its ``EmbLoss`` x ``reg_weight``), ``ssl`` (its ``calc_ssl_loss``). RecBole's InfoNCE
  denominators run over every row of view 2, its [PAD] rows included, which we do not have:
  ``ssl`` is compared with RecBole's own function on its views without the [PAD] rows, and the
  difference with them is reported too (``ssl_with_pad``);
* the gradients of the total loss (RecBole's terms, [PAD] rows left out of the InfoNCE) for every
  user and item row.

Figures: max |ours - RecBole| / max |RecBole| per quantity, written to
``bench/results/faithful/sgl-<split>.json``. Run with the reference environment:

    PYTHONPATH=src /tmp/simkgcl-reference-venv/bin/python bench/faithful_sgl.py
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from recbole_bridge import build_recbole, copy_rows, ours_dataset, relative_difference  # noqa: E402

OUT_DIR = Path(__file__).resolve().parent / "results" / "faithful"
TYPES = ("ED", "ND", "RW")


def inverse(rows: torch.Tensor, size: int) -> torch.Tensor:
    """RecBole id -> our id (-1 for RecBole's rows we do not have, i.e. [PAD])."""
    out = torch.full((size,), -1, dtype=torch.long)
    out[rows] = torch.arange(rows.numel())
    return out


def kept_interactions(graph: torch.Tensor, n_users_rb: int, user_of: torch.Tensor,
                      item_of: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Our (users, items) of the user -> item entries of RecBole's normalised sparse graph."""
    rows, cols = graph.coalesce().indices()
    upper = (rows < n_users_rb) & (cols >= n_users_rb)
    users, items = user_of[rows[upper]], item_of[cols[upper] - n_users_rb]
    if bool((users < 0).any()) or bool((items < 0).any()):
        raise SystemExit("RecBole's graph has an interaction of a [PAD] row")
    return users, items


def compare_type(aug: str, split: str, seed: int) -> dict:
    from simkgcl.graph import build_graph
    from simkgcl.models import get_model_class

    rb = build_recbole("SGL", split, seed=seed, params={"type": aug})
    rbm = rb.model
    dataset, our_split = ours_dataset(split)
    model = get_model_class("sgl")(build_graph(dataset, our_split), {
        "type": aug.lower(), "n_layers": rbm.n_layers, "drop_ratio": rbm.drop_ratio,
        "ssl_tau": rbm.ssl_tau, "ssl_weight": rbm.ssl_weight, "reg_weight": rbm.reg_weight,
        "embedding_size": rbm.embed_dim})
    user_rows = rb.field_ids(rb.dataset.uid_field, dataset.user_tokens)
    item_rows = rb.field_ids(rb.dataset.iid_field, dataset.item_tokens)
    copy_rows(model.user_embedding.weight, rbm.user_embedding.weight, user_rows)
    copy_rows(model.item_embedding.weight, rbm.item_embedding.weight, item_rows)
    user_of = inverse(user_rows, rbm.n_users)
    item_of = inverse(item_rows, rbm.n_items)

    np.random.seed(seed)
    rbm.train()  # RecBole draws its two augmented graphs here
    views = []
    for sub in (rbm.sub_graph1, rbm.sub_graph2):
        graphs = sub if isinstance(sub, list) else [sub]
        views.append([kept_interactions(g, rbm.n_users, user_of, item_of) for g in graphs])
    model.set_views(views)
    model.train()

    batch = next(iter(rb.train_data))
    rb_users, rb_pos, rb_neg = (batch[rbm.USER_ID], batch[rbm.ITEM_ID], batch[rbm.NEG_ITEM_ID])
    users, pos, neg = user_of[rb_users], item_of[rb_pos], item_of[rb_neg]

    # RecBole's side, with its own functions
    rb_main = rbm.forward(rbm.train_graph)
    rb_sub1 = rbm.forward(rbm.sub_graph1)
    rb_sub2 = rbm.forward(rbm.sub_graph2)
    reg_weight, rbm.reg_weight = rbm.reg_weight, 0.0
    rb_bpr = rbm.calc_bpr_loss(*rb_main, rb_users, rb_pos, rb_neg)
    rbm.reg_weight = reg_weight
    rb_reg = reg_weight * rbm.reg_loss(rbm.user_embedding(rb_users),
                                       rbm.item_embedding(rb_pos), rbm.item_embedding(rb_neg))
    rb_ssl_pad = rbm.calc_ssl_loss(rb_users, rb_pos, rb_sub1[0], rb_sub2[0], rb_sub1[1],
                                   rb_sub2[1])
    # without the [PAD] rows: rows 1.. of every table, ids shifted by one
    rb_ssl = rbm.calc_ssl_loss(rb_users - 1, rb_pos - 1, rb_sub1[0][1:], rb_sub2[0][1:],
                               rb_sub1[1][1:], rb_sub2[1][1:])
    (rb_bpr + rb_reg + rb_ssl).backward()

    # ours
    ours_views = model.views()
    terms = model(users, pos, neg)
    sum(terms.values()).backward()

    n_users = model.n_users
    report: dict = {"views": {}, "terms": {}, "gradients": {}, "values": {}}
    for name, ours_view, (rb_u, rb_i) in zip(("main", "view1", "view2"), ours_views,
                                             (rb_main, rb_sub1, rb_sub2), strict=True):
        report["views"][name] = max(
            relative_difference(ours_view[:n_users], rb_u[user_rows]),
            relative_difference(ours_view[n_users:], rb_i[item_rows]))
    for name, theirs in (("bpr", rb_bpr), ("reg", rb_reg), ("ssl", rb_ssl)):
        report["terms"][name] = relative_difference(terms[name], theirs)
        report["values"][name] = [float(terms[name]), float(theirs)]
    report["terms_with_pad"] = {"ssl": relative_difference(terms["ssl"], rb_ssl_pad)}
    report["values"]["ssl_with_pad"] = float(rb_ssl_pad)
    report["gradients"]["user_embedding"] = relative_difference(
        model.user_embedding.weight.grad, rbm.user_embedding.weight.grad[user_rows])
    report["gradients"]["item_embedding"] = relative_difference(
        model.item_embedding.weight.grad, rbm.item_embedding.weight.grad[item_rows])
    report["batch"] = {"rows": int(users.numel()), "distinct_users": int(users.unique().numel()),
                       "distinct_items": int(pos.unique().numel())}
    report["kept_interactions"] = [[int(u.numel()) for u, _ in view] for view in views]
    report["max_relative_difference"] = max(
        v for group in ("views", "terms", "gradients") for v in report[group].values())
    return report


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--split", default="lastfm-kg")
    parser.add_argument("--seed", type=int, default=2020)
    parser.add_argument("--types", default=",".join(TYPES))
    args = parser.parse_args()
    torch.set_num_threads(1)
    results = {aug: compare_type(aug, args.split, args.seed) for aug in args.types.split(",")}
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    out = OUT_DIR / f"sgl-{args.split}.json"
    record = {"command": "PYTHONPATH=src /tmp/simkgcl-reference-venv/bin/python "
                         f"bench/faithful_sgl.py --split {args.split} --seed {args.seed}",
              "recbole": "1.2.1", "torch": torch.__version__, "dtype": "float32",
              "results": results}
    out.write_text(json.dumps(record, indent=2) + "\n")
    for aug, r in results.items():
        print(f"{aug}: max relative difference {r['max_relative_difference']:.2e} "
              f"(views {max(r['views'].values()):.2e}, terms {max(r['terms'].values()):.2e}, "
              f"gradients {max(r['gradients'].values()):.2e}); ssl with RecBole's [PAD] rows "
              f"{r['terms_with_pad']['ssl']:.2e}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
