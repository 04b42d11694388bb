"""KGIN against RecBole 1.2.1's KGIN: same initial weights, dropout off, one fixed batch.

Builds RecBole's KGIN on a fixed split folder (``../shared/splits/<split>``) as its trainer would,
builds ours on the same files, copies RecBole's initial weights into ours row by row, matched by
original token (users, items, entities; relation rows by token, RecBole's [PAD] and
[UI-Relation] rows to our two extra rows; the intents' relation logits by the same column map),
turns dropout off on both (``node_dropout_rate`` 0, ``mess_dropout_rate`` 0), and compares:

* the final user and item embeddings (RecBole's ``forward``), and RecBole's full-sort scores
  with ours for a few users;
* each loss term on one fixed batch (BPR, the L2 term, the independence term; RecBole's
  ``calculate_loss`` total too) and the gradients of the total for every parameter table;

for every independence loss (``ind``: cosine, distance, mi), in float32 (both models as they
train) and in float64 (both cast), where only the order of operations still differs; and, as
the scale of float32 rounding, RecBole's own float32 gradient of the intents' logits against
its float64 one (same initial weights). Also
records that RecBole's evaluation samples the KG (two ``full_sort_predict`` passes of a model
with ``node_dropout_rate`` 0.5 in eval mode differ), the oddity ``eval_edge_sampling`` keeps.

    PYTHONPATH=src /tmp/simkgcl-reference-venv/bin/python bench/faithful_kgin.py \\
        [--split lastfm-kg] [--out bench/results/faithful/kgin-lastfm-kg.json]

Writes the largest relative difference (``max |ours - RecBole| / max |RecBole|``) per compared
quantity to the JSON and prints a summary.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))  # bench/ is not a package
from faithful_common import header, parse_args, record_largest, write_results  # noqa: E402
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
BATCH_SIZE = 2048


def relation_rows(rb, dataset) -> torch.Tensor:
    """RecBole's relation row of each of our relation-table rows: the dataset's relations by
    token, then [PAD] and [UI-Relation] (our two extra rows)."""
    field = rb.dataset.relation_field
    lookup = rb.dataset.field2token_id[field]
    tokens = [str(t) for t in dataset.relation_tokens] + ["[PAD]", "[UI-Relation]"]
    rows = torch.as_tensor([lookup[t] for t in tokens], dtype=torch.long)
    assert sorted(rows.tolist()) == list(range(rb.model.n_relations)), "relation rows differ"
    return rows


def fixed_batch(dataset, split, seed: int = 0):
    """``BATCH_SIZE`` training pairs with one uniform negative each (our ids)."""
    generator = torch.Generator().manual_seed(seed)
    users = torch.as_tensor(split.train.users, dtype=torch.long)
    items = torch.as_tensor(split.train.items, dtype=torch.long)
    rows = torch.randint(0, len(users), (BATCH_SIZE,), generator=generator)
    negatives = torch.randint(0, dataset.n_items, (BATCH_SIZE,), generator=generator)
    return users[rows], items[rows], negatives


def compare(split_name: str, ind: str, dtype: torch.dtype) -> dict[str, Any]:
    from recbole.data.interaction import Interaction

    rb = build_recbole("KGIN", split_name, params={**NO_DROPOUT, "ind": ind})
    dataset, split = ours_dataset(split_name)
    ours = get_model_class("kgin")(build_graph(dataset, split),
                                   {**NO_DROPOUT, "ind": ind, "extra_relation_rows": 2})
    theirs = rb.model
    user_map = rb.field_ids(rb.dataset.uid_field, dataset.user_tokens)
    entity_map = entity_rows(rb, dataset)
    item_map = entity_map[: dataset.n_items]
    relation_map = relation_rows(rb, dataset)
    gcn = theirs.gcn
    copy_rows(ours.user_embedding.weight, theirs.user_embedding.weight, user_map)
    copy_rows(ours.entity_embedding.weight, theirs.entity_embedding.weight, entity_map)
    copy_rows(ours.relation_embedding.weight, gcn.relation_embedding.weight, relation_map)
    copy_rows(ours.intent_embedding.weight, theirs.latent_embedding.weight,
              torch.arange(ours.n_factors))
    copy_rows(ours.intent_relation_logits.t(), gcn.disen_weight_att.t(), relation_map)
    ours.to(dtype)
    theirs.to(dtype)
    gcn.interact_mat = gcn.interact_mat.to(dtype)  # a plain attribute: .to() leaves it
    ours.train()
    theirs.train()  # dropout rates 0: training mode computes what evaluation does

    out: dict[str, Any] = {}
    their_users, their_entities, _ = theirs.forward()
    our_users, our_items = ours.final_embeddings()
    out["final_user_embeddings"] = relative_difference(our_users, their_users[user_map])
    out["final_item_embeddings"] = relative_difference(our_items, their_entities[item_map])
    probe = user_map[:64]
    scores = theirs.full_sort_predict(Interaction({theirs.USER_ID: probe}))
    their_scores = scores.view(len(probe), -1)[:, item_map]
    out["full_sort_scores"] = relative_difference(our_users[:64] @ our_items.t(), their_scores)

    users, pos, neg = fixed_batch(dataset, split)
    batch = Interaction({theirs.USER_ID: user_map[users], theirs.ITEM_ID: item_map[pos],
                         theirs.NEG_ITEM_ID: item_map[neg]})
    their_users, their_entities, cor = theirs.forward()
    u, p, n = (their_users[user_map[users]], their_entities[item_map[pos]],
               their_entities[item_map[neg]])
    their_terms = {
        "bpr": theirs.mf_loss((u * p).sum(1), (u * n).sum(1)),
        "reg": theirs.reg_weight * theirs.reg_loss(u, p, n).squeeze(),
        "ind": theirs.sim_decay * cor,
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
        ("user", ours.user_embedding.weight, theirs.user_embedding.weight, user_map, 0),
        ("entity", ours.entity_embedding.weight, theirs.entity_embedding.weight, entity_map, 0),
        ("relation", ours.relation_embedding.weight, gcn.relation_embedding.weight,
         relation_map, 0),
        ("intent", ours.intent_embedding.weight, theirs.latent_embedding.weight,
         torch.arange(ours.n_factors), 0),
        ("intent_relation_logits", ours.intent_relation_logits, gcn.disen_weight_att,
         relation_map, 1),
    ]
    for name, mine, their, rows, dim in grads:
        out[f"grad_{name}"] = relative_difference(mine.grad, their.grad.index_select(dim, rows))
    # RecBole's own gradient of the intents' logits, to measure its float32 rounding
    out["_recbole_logits_grad"] = gcn.disen_weight_att.grad.detach().double().clone()
    return out


def recbole_eval_samples_the_kg(split_name: str) -> bool:
    """Whether RecBole's KGIN (node_dropout_rate 0.5) scores differ between two evaluations."""
    from recbole.data.interaction import Interaction

    rb = build_recbole("KGIN", split_name)
    rb.model.eval()
    probe = Interaction({rb.model.USER_ID: torch.arange(1, 9)})
    with torch.no_grad():
        first = rb.model.full_sort_predict(probe)
        rb.model.restore_user_e = rb.model.restore_entity_e = None  # a new evaluation
        second = rb.model.full_sort_predict(probe)
    return not torch.equal(first, second)


def main(argv: list[str] | None = None) -> None:
    split, out_path = parse_args("kgin", __doc__, argv)
    torch.set_num_threads(1)
    results = header(split, BATCH_SIZE)
    own_rounding: dict[str, float] = {}
    for ind in ("cosine", "distance", "mi"):
        logits_grads = []
        for dtype in (torch.float32, torch.float64):
            key = f"{str(dtype).removeprefix('torch.')}-{ind}"
            results[key] = compare(split, ind, dtype)
            logits_grads.append(results[key].pop("_recbole_logits_grad"))
            record_largest(results, key)
        # same initial weights (same seed) in both precisions: RecBole float32 vs float64
        own_rounding[ind] = relative_difference(*logits_grads)
    results["recbole_float32_vs_float64_grad_intent_relation_logits"] = own_rounding
    print(f"RecBole's own float32 rounding of the logits' gradient: {own_rounding}")
    results["recbole_eval_samples_the_kg"] = recbole_eval_samples_the_kg(split)
    print(f"RecBole's evaluation samples the KG: {results['recbole_eval_samples_the_kg']}")
    write_results(results, out_path)

if __name__ == "__main__":
    main()
