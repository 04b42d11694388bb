"""KGAT against RecBole 1.2.1's KGAT: same initial weights, dropout off, one fixed batch each.

RecBole's KGAT needs DGL, which the reference environment lacks: ``bench/dgl_shim`` stands in
for the three DGL calls it makes (put it on ``PYTHONPATH``). Builds RecBole's KGAT on a fixed
split folder (``../shared/splits/<split>``, seed 2020) as its trainer would, builds ours on the
same files, copies RecBole's initial weights into ours row by row, matched by original token
(users, items, entities; relations by token, RecBole's [UI-Relation] row to our interaction
relation, its [PAD] relation row has no counterpart; ``trans_w`` by the same rows; the
aggregator layers as they are), sets ``mess_dropout`` to 0 on both and compares:

(a) the CKG's cells (RecBole's ``A_in`` pattern, mapped to our node ids, against ours) and the
    initial attention matrix ``A0`` (``init_graph``) cell by cell;
(b) the attention after one update (RecBole's ``update_attentive_A``, our
    ``update_attention``), cell by cell;
(c) the final user and item rows (RecBole's ``forward``) before and after that update;
(d) each loss term, after the update, on one fixed batch: the interaction loss (``bpr``,
    ``reg``; RecBole's ``calculate_loss`` total) on 2,048 training pairs with one uniform
    negative each, and the TransR loss (``kg``, ``kg_reg``; ``calculate_kg_loss``) on 2,048
    triples with a uniform corrupted tail each;
(e) the gradient of each of the two totals for every parameter table it reaches (interaction:
    users, entities, the aggregators' W1/W2 weights and biases; TransR: entities, relations,
    ``trans_w``; neither reaches the other's own tables, the attention is not differentiated);

in float32 (both models as they train) and in float64 (both cast). Figures are
``max |ours - RecBole| / max |RecBole|``.

What float64 leaves, and why (everything else agrees to ~1e-15):

* ``A0`` differs by ~1e-7: RecBole computes ``init_graph`` in float64 (scipy) but stores it
  with ``torch.FloatTensor`` in float32, and ``A_in`` is a plain attribute that ``.double()``
  does not cast. The final rows before the update inherit it (~1e-8). The float64 entry also
  reports the same rows with our ``A0`` rounded to float32 (``*_before_update_A0_float32``):
  they agree to float64 rounding, so the storage is the whole difference. The update
  recomputes ``A`` from the (float64) weights, so from then on nothing of it remains.
* ``reg`` and ``kg_reg`` are float32-rounded in RecBole whatever the weights' dtype (~5e-8):
  its ``EmbLoss`` accumulates into ``torch.zeros(1)`` (float32) in place. Its totals are then
  float32 too (~1e-8): ``mf_loss + reg_weight * reg_loss`` adds a 0-dimensional float64 tensor
  to a 1-element float32 one, and type promotion lets the dimensioned operand's dtype win.
* The TransR gradient of the relation table differs by ~4e-12 (entities, ``trans_w``: ~1e-14):
  backpropagating through that float32 total multiplies ``kg_reg``'s gradient by
  ``reg_weight`` rounded to float32 (1e-5 -> 9.9999997e-6, 2.5e-8 relative). The float64
  entry also reports our TransR gradients with ``reg_weight`` so rounded
  (``grad_transr_*_reg_weight_float32``): they agree to float64 rounding.

    PYTHONPATH=src:bench/dgl_shim /tmp/simkgcl-reference-venv/bin/python bench/faithful_kgat.py \\
        [--split lastfm-kg] [--out bench/results/faithful/kgat-lastfm-kg.json]

Writes the relative difference per compared quantity to the JSON and prints a table.
"""

from __future__ import annotations

import sys
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

NO_DROPOUT = {"mess_dropout": 0.0}
DTYPES = (torch.float32, torch.float64)
CONTROL = "_reg_weight_float32"  # suffix of the float64 TransR gradients with it rounded


def fixed_triples(graph, seed: int = 1):
    """``BATCH_SIZE`` KG triples with one uniform corrupted tail each (our ids)."""
    generator = torch.Generator().manual_seed(seed)
    rows = torch.randint(0, graph.kg_heads.numel(), (BATCH_SIZE,), generator=generator)
    negatives = torch.randint(0, graph.n_entities, (BATCH_SIZE,), generator=generator)
    return (graph.kg_heads[rows].long(), graph.kg_relations[rows].long(),
            graph.kg_tails[rows].long(), negatives)


def build_pair(split_name: str):
    """RecBole's KGAT and ours with RecBole's initial weights; the id maps."""
    rb = build_recbole("KGAT", split_name, params=NO_DROPOUT)
    dataset, split = ours_dataset(split_name)
    graph = build_graph(dataset, split)
    ours = get_model_class("kgat")(graph, NO_DROPOUT)
    theirs = rb.model
    relations = relation_rows(rb, dataset)  # tokens, [PAD], [UI-Relation]
    maps = {
        "user": rb.field_ids(rb.dataset.uid_field, dataset.user_tokens),
        "entity": entity_rows(rb, dataset),
        "relation": torch.cat([relations[:-2], relations[-1:]]),  # ours has no [PAD] row
    }
    maps["item"] = maps["entity"][: dataset.n_items]
    # our CKG node (users, then entities) -> RecBole's (users, then entities, [PAD]s included)
    maps["node"] = torch.cat([maps["user"], theirs.n_users + maps["entity"]])
    copy_rows(ours.user_embedding.weight, theirs.user_embedding.weight, maps["user"])
    copy_rows(ours.entity_embedding.weight, theirs.entity_embedding.weight, maps["entity"])
    copy_rows(ours.relation_embedding.weight, theirs.relation_embedding.weight, maps["relation"])
    copy_rows(ours.trans_w.weight, theirs.trans_w.weight, maps["relation"])
    for mine, their in zip(ours.aggregator_layers, theirs.aggregator_layers, strict=True):
        for name in ("W1", "W2"):
            getattr(mine, name).load_state_dict(getattr(their, name).state_dict())
    return rb, graph, dataset, split, ours, maps


def attention_cells(ours, theirs, node_map: torch.Tensor):
    """RecBole's ``A_in`` cells and values, and ours, both as ``row * N + col`` keys in
    RecBole's node ids, sorted; the values in the same order."""
    n_rb = theirs.n_users + theirs.n_entities
    a = theirs.A_in.coalesce()
    rows, cols = a.indices()
    their_keys, order = torch.sort(rows * n_rb + cols)
    ckg = ours.ckg
    our_keys = node_map[ckg.cell_rows.long()] * n_rb + node_map[ckg.adjacency.col.long()]
    our_keys, our_order = torch.sort(our_keys)
    return (their_keys, a.values()[order], our_keys,
            ours.attention_values.detach()[our_order])


def compare_attention(out: dict[str, Any], name: str, ours, theirs, node_map) -> None:
    their_keys, their_values, our_keys, our_values = attention_cells(ours, theirs, node_map)
    same = their_keys.numel() == our_keys.numel() and torch.equal(their_keys, our_keys)
    if not same:
        raise SystemExit(f"{name}: RecBole's CKG has {their_keys.numel()} cells, ours "
                         f"{our_keys.numel()}, and they are not the same cells")
    out[f"cells_{name}"] = int(our_keys.numel())
    out[f"attention_{name}"] = relative_difference(our_values, their_values)


def compare_rows(out: dict[str, Any], suffix: str, ours, theirs, maps) -> None:
    with torch.no_grad():
        their_users, their_entities = theirs.forward()
        our_users, our_items = ours.final_embeddings()
    out[f"final_users_{suffix}"] = relative_difference(our_users, their_users[maps["user"]])
    out[f"final_items_{suffix}"] = relative_difference(our_items, their_entities[maps["item"]])


def gradients(out: dict[str, Any], term: str, ours, theirs, maps) -> None:
    """``grad_<term>_<table>`` for every table with a gradient on RecBole's side."""
    tables = [
        ("user", ours.user_embedding.weight, theirs.user_embedding.weight, maps["user"]),
        ("entity", ours.entity_embedding.weight, theirs.entity_embedding.weight, maps["entity"]),
        ("relation", ours.relation_embedding.weight, theirs.relation_embedding.weight,
         maps["relation"]),
        ("trans_w", ours.trans_w.weight, theirs.trans_w.weight, maps["relation"]),
    ]
    for name, mine, their, rows in tables:
        if their.grad is None:
            if mine.grad is not None and bool(mine.grad.any()):
                raise SystemExit(f"{term}: our {name} table has a gradient, RecBole's none")
            continue
        out[f"grad_{term}_{name}"] = relative_difference(mine.grad,
                                                         their.grad.index_select(0, rows))
    for depth, (mine_layer, their_layer) in enumerate(
            zip(ours.aggregator_layers, theirs.aggregator_layers, strict=True)):
        their_params = dict(their_layer.named_parameters())
        for name, mine in mine_layer.named_parameters():
            their = their_params[name]
            if their.grad is not None:
                out[f"grad_{term}_layer{depth}_{name}"] = relative_difference(mine.grad,
                                                                              their.grad)


def compare(split_name: str, dtype: torch.dtype) -> dict[str, Any]:
    from recbole.data.interaction import Interaction

    rb, graph, dataset, split, ours, maps = build_pair(split_name)
    theirs = rb.model
    ours.to(dtype)
    theirs.to(dtype)
    ours.train()
    theirs.train()  # mess_dropout 0: training mode computes what evaluation does
    out: dict[str, Any] = {}

    # (a) the CKG and A0; (c) the rows before the update
    compare_attention(out, "initial", ours, theirs, maps["node"])
    theirs.A_in = theirs.A_in.to(dtype)  # RecBole stores A0 in float32 (see the docstring)
    compare_rows(out, "before_update", ours, theirs, maps)
    if dtype == torch.float64:  # our A0 with RecBole's float32 storage: the whole difference?
        exact = ours.attention_values.clone()
        ours.attention_values.copy_(exact.float().double())
        compare_rows(out, "before_update_A0_float32", ours, theirs, maps)
        ours.attention_values.copy_(exact)

    # (b) one attention update; (c) the rows after it
    with torch.no_grad():
        theirs.update_attentive_A()
        ours.update_attention()
    compare_attention(out, "updated", ours, theirs, maps["node"])
    compare_rows(out, "after_update", ours, theirs, maps)

    # (d), (e) the interaction loss on one batch
    users, pos, neg = fixed_batch(dataset, split)
    u, p, n = maps["user"][users], maps["item"][pos], maps["item"][neg]
    batch = Interaction({theirs.USER_ID: u, theirs.ITEM_ID: p, theirs.NEG_ITEM_ID: n})
    their_users, their_entities = theirs.forward()
    ue, pe, ne = their_users[u], their_entities[p], their_entities[n]
    their_terms = {
        "bpr": theirs.mf_loss((ue * pe).sum(1), (ue * ne).sum(1)),
        "reg": theirs.reg_weight * theirs.reg_loss(ue, pe, ne).squeeze(),
    }
    theirs.zero_grad()
    ours.zero_grad()
    their_total = theirs.calculate_loss(batch)
    our_terms = ours(users, pos, neg)
    their_total.backward()
    sum(our_terms.values()).backward()
    for name, value in our_terms.items():
        out[f"loss_{name}"] = relative_difference(value, their_terms[name])
        out[f"value_{name}"] = [float(value.detach()), float(their_terms[name].detach())]
    out["loss_interaction"] = relative_difference(sum(our_terms.values()), their_total)
    gradients(out, "interaction", ours, theirs, maps)

    # (d), (e) the TransR loss on one batch of triples
    heads, relations, tails, corrupted = fixed_triples(graph)
    kg_batch = Interaction({
        theirs.HEAD_ENTITY_ID: maps["entity"][heads],
        theirs.RELATION_ID: maps["relation"][relations],
        theirs.TAIL_ENTITY_ID: maps["entity"][tails],
        theirs.NEG_TAIL_ENTITY_ID: maps["entity"][corrupted],
    })
    h, r, t, c = theirs._get_kg_embedding(*(kg_batch[f] for f in (
        theirs.HEAD_ENTITY_ID, theirs.RELATION_ID, theirs.TAIL_ENTITY_ID,
        theirs.NEG_TAIL_ENTITY_ID)))
    their_terms = {
        "kg": torch.nn.functional.softplus(((h + r - t) ** 2).sum(1)
                                           - ((h + r - c) ** 2).sum(1)).mean(),
        "kg_reg": theirs.reg_weight * theirs.reg_loss(h, r, t, c).squeeze(),
    }
    theirs.zero_grad(set_to_none=True)
    ours.zero_grad(set_to_none=True)
    their_total = theirs.calculate_kg_loss(kg_batch)
    our_terms = ours.kg_loss(heads, relations, tails, corrupted)
    their_total.backward()
    sum(our_terms.values()).backward()
    for name, value in our_terms.items():
        out[f"loss_{name}"] = relative_difference(value, their_terms[name])
        out[f"value_{name}"] = [float(value.detach()), float(their_terms[name].detach())]
    out["loss_transr"] = relative_difference(sum(our_terms.values()), their_total)
    gradients(out, "transr", ours, theirs, maps)
    if dtype == torch.float64:  # RecBole's reg_weight rounded to float32: the whole difference?
        exact_weight = ours.reg_weight
        ours.reg_weight = float(torch.tensor(exact_weight, dtype=torch.float32))
        ours.zero_grad(set_to_none=True)
        sum(ours.kg_loss(heads, relations, tails, corrupted).values()).backward()
        rounded: dict[str, Any] = {}
        gradients(rounded, "transr", ours, theirs, maps)
        out.update({f"{k}{CONTROL}": v for k, v in rounded.items()})
        ours.reg_weight = exact_weight
    return out


GROUPS = (  # table rows: (label, prefix of the JSON keys)
    ("A0 (initial attention)", "attention_initial"),
    ("A after one update", "attention_updated"),
    ("final users/items before the update", "final_"),
    ("final users/items after the update", "final_"),
    ("interaction loss terms (bpr, reg, total)", ("loss_bpr", "loss_reg", "loss_interaction")),
    ("TransR loss terms (kg, kg_reg, total)", ("loss_kg", "loss_kg_reg", "loss_transr")),
    ("interaction gradients (every table)", "grad_interaction_"),
    ("TransR gradients (every table)", "grad_transr_"),
)


def group_value(entry: dict[str, Any], label: str, prefix) -> float:
    """The largest figure of one table row (the float64 controls only when asked for)."""
    if isinstance(prefix, tuple):
        return max(entry[k] for k in prefix)
    if prefix == "final_":
        when = "before_update" if "before" in label else "after_update"
        return max(entry[f"final_users_{when}"], entry[f"final_items_{when}"])
    return max(v for k, v in entry.items()
               if k.startswith(prefix) and (not k.endswith(CONTROL) or prefix.endswith(CONTROL)))


def main(argv: list[str] | None = None) -> None:
    split, out_path = parse_args("kgat", __doc__, argv)
    torch.set_num_threads(1)
    results = header(split, BATCH_SIZE)
    for dtype in DTYPES:
        key = str(dtype).removeprefix("torch.")
        results[key] = compare(split, dtype)
        record_largest(results, key)
    f32, f64 = results["float32"], results["float64"]
    print(f"CKG cells: {f32['cells_initial']} (same in RecBole and ours)")
    print(f"{'max |ours - RecBole| / max |RecBole|':<44} {'float32':>9} {'float64':>9}")
    for label, prefix in GROUPS:
        print(f"{label:<44} {group_value(f32, label, prefix):>9.2g} "
              f"{group_value(f64, label, prefix):>9.2g}")
    print(f"float64, final users/items before the update with our A0 rounded to float32: "
          f"{f64['final_users_before_update_A0_float32']:.2g} / "
          f"{f64['final_items_before_update_A0_float32']:.2g}; TransR gradients with "
          "reg_weight rounded to float32: "
          f"{group_value(f64, '', 'grad_transr_relation' + CONTROL):.2g} (relation), "
          f"{max(v for k, v in f64.items() if k.endswith(CONTROL)):.2g} (every table)")
    write_results(results, out_path)


if __name__ == "__main__":
    main()
