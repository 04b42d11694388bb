"""MCCLK against RecBole 1.2.1's MCCLK: same initial weights, dropout off, one fixed batch.

Builds RecBole's MCCLK on a fixed split folder (``../shared/splits/<split>``) as its trainer
would, builds ours on the same files, copies RecBole's initial weights into ours row by row,
matched by original token (users, items, entities; relation rows by token, RecBole's [PAD] and
[UI-Relation] rows to our two extra rows; the three projection heads as they are), turns
dropout off on both (``node_dropout_rate`` 0, ``mess_dropout_rate`` 0) and compares:

* the five views RecBole's ``forward`` returns (structural users and entities, collaborative
  users and items, semantic items: the rows of the semantic view that anything reads) and the
  full-sort scores of a few users;
* each loss term on one fixed batch (BPR, the L2 term, the local and the global contrastive
  terms; RecBole's ``calculate_loss`` total too) and the gradient of the total for every table.

RecBole's kNN semantic graph runs over its whole entity table, [PAD] entity (row 0) included:
a [PAD] row with its own random embedding can be some entity's neighbour. Our graph gets one
extra isolated entity (no triple, no interaction) holding RecBole's [PAD] row, so both graphs
choose among the same rows.

    PYTHONPATH=src /tmp/simkgcl-reference-venv/bin/python bench/faithful_mcclk.py \\
        [--split lastfm-kg] [--out bench/results/faithful/mcclk-lastfm-kg.json]

Writes the largest relative difference (``max |ours - RecBole| / max |RecBole|``) per compared
quantity to the JSON and prints a summary.
"""

from __future__ import annotations

import json
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from faithful_common import header, parse_args, record_largest, write_results  # noqa: E402
from faithful_kgin import BATCH_SIZE, fixed_batch, relation_rows  # noqa: E402
from recbole_bridge import (  # noqa: E402
    build_recbole,
    copy_rows,
    entity_rows,
    ours_dataset,
    relative_difference,
)

from simkgcl.graph import build_graph  # noqa: E402
from simkgcl.models import get_model_class  # noqa: E402

NO_DROPOUT = {"node_dropout_rate": 0.0, "mess_dropout_rate": 0.0}


def build_pair(split_name: str, params: dict[str, Any]):
    """RecBole's MCCLK and ours with RecBole's initial weights; the id maps."""
    rb = build_recbole("MCCLK", split_name, params={**NO_DROPOUT, **params})
    dataset, split = ours_dataset(split_name)
    graph = build_graph(dataset, split)
    graph = replace(graph, n_entities=graph.n_entities + 1)  # RecBole's [PAD] entity, isolated
    ours = get_model_class("mcclk")(graph, {**NO_DROPOUT, **params, "extra_relation_rows": 2})
    theirs = rb.model
    maps = {
        "user": rb.field_ids(rb.dataset.uid_field, dataset.user_tokens),
        "entity": torch.cat([entity_rows(rb, dataset), torch.tensor([0])]),
        "relation": relation_rows(rb, dataset),
    }
    maps["item"] = maps["entity"][: dataset.n_items]
    copy_rows(ours.user_embedding.weight, theirs.user_embedding.weight, maps["user"])
    copy_rows(ours.entity_embedding.weight, theirs.entity_embedding.weight, maps["entity"])
    copy_rows(ours.relation_embedding.weight, theirs.gcn.relation_embedding.weight,
              maps["relation"])
    for head in ("fc1", "fc2", "fc3"):
        getattr(ours, head).load_state_dict(getattr(theirs, head).state_dict())
    return rb, dataset, split, ours, maps


def compare(split_name: str, params: dict[str, Any]) -> dict[str, Any]:
    from recbole.data.interaction import Interaction

    rb, dataset, split, ours, maps = build_pair(split_name, params)
    theirs = rb.model
    ours.train()
    theirs.train()  # dropout rates 0: training mode computes what evaluation does
    out: dict[str, Any] = {}
    sem, u_c, i_c, u_s, e_s = theirs.forward()
    mine = ours.views()
    their_views = (u_s[maps["user"]], e_s[maps["entity"]], u_c[maps["user"]],
                   i_c[maps["item"]], sem[maps["entity"][: ours.n_items]])
    for name, a, b in zip(("structural_users", "structural_entities", "collaborative_users",
                           "collaborative_items", "semantic_items"), mine, their_views,
                          strict=True):
        out[f"view_{name}"] = relative_difference(a, b)
    users_e, items_e = ours.final_embeddings()
    probe = maps["user"][:64]
    scores = theirs.full_sort_predict(Interaction({theirs.USER_ID: probe}))
    their_scores = scores.view(len(probe), -1)[:, maps["item"]]
    out["full_sort_scores"] = relative_difference(users_e[:64] @ items_e.t(), their_scores)

    users, pos, neg = fixed_batch(dataset, split)
    u, p, n = maps["user"][users], maps["item"][pos], maps["item"][neg]
    batch = Interaction({theirs.USER_ID: u, theirs.ITEM_ID: p, theirs.NEG_ITEM_ID: n})
    sem, u_c, i_c, u_s, e_s = theirs.forward()
    items = torch.cat([p, n])
    user_rows = torch.cat([u_s[u], u_c[u]], dim=1)
    pos_rows = torch.cat([e_s[p], sem[p] + i_c[p]], dim=1)
    neg_rows = torch.cat([e_s[n], sem[n] + i_c[n]], dim=1)
    alpha, beta = theirs.alpha, theirs.beta
    their_terms = {
        "bpr": theirs.rec_loss((user_rows * pos_rows).sum(1), (user_rows * neg_rows).sum(1)),
        "reg": theirs.reg_weight * theirs.reg_loss(user_rows, pos_rows, neg_rows).squeeze(),
        "cl_local": beta * alpha * theirs.local_level_loss(sem[items], i_c[items]),
        "cl_global": beta * (1 - alpha) * (
            theirs.global_level_loss_1(u_s[u], u_c[u])
            + theirs.global_level_loss_2(e_s[items], sem[items] + i_c[items])),
    }
    their_total = theirs.calculate_loss(batch)
    our_terms = ours(users, pos, neg)
    for name, value in our_terms.items():
        out[f"loss_{name}"] = relative_difference(value, their_terms[name])
        out[f"value_{name}"] = [float(value), float(their_terms[name])]
    out["loss_total"] = relative_difference(sum(our_terms.values()), their_total)

    theirs.zero_grad()
    ours.zero_grad()
    their_total.backward()
    sum(our_terms.values()).backward()
    grads = [
        ("user", ours.user_embedding.weight, theirs.user_embedding.weight, maps["user"]),
        ("entity", ours.entity_embedding.weight, theirs.entity_embedding.weight, maps["entity"]),
        ("relation", ours.relation_embedding.weight, theirs.gcn.relation_embedding.weight,
         maps["relation"]),
    ]
    for name, mine_w, their_w, rows in grads:
        out[f"grad_{name}"] = relative_difference(mine_w.grad, their_w.grad.index_select(0, rows))
    for head in ("fc1", "fc2", "fc3"):
        their_params = dict(getattr(theirs, head).named_parameters())
        worst = max(relative_difference(w.grad, their_params[name].grad)
                    for name, w in getattr(ours, head).named_parameters())
        out[f"grad_{head}"] = worst
    return out


def main(argv: list[str] | None = None) -> None:
    split, out_path = parse_args("mcclk", __doc__, argv)
    torch.set_num_threads(2)
    results = header(split, BATCH_SIZE, dtype="float32")
    for label, params in (("default", {}), ("build_graph_separately-false",
                                            {"build_graph_separately": False})):
        results[label] = compare(split, params)
        record_largest(results, label)
        print(json.dumps(results[label], indent=1))
    write_results(results, out_path)

if __name__ == "__main__":
    main()
