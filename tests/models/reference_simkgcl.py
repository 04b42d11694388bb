"""A deliberately plain SimKGCL (dense tensors, Python loops over triples).

Written from the model description in the SimKGCL issue, independently of the fast model, to
check its views, losses and gradients. Slow on purpose; only for tiny graphs. Dropout is off
unless the random draws of each KG step are given (``draws``), so that the fast model's own
draws can be replayed here.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from simkgcl.graph import GraphData
from tests.models.toy_graph import dense_norm_adjacency


@dataclass
class StepDraws:
    """The random draws of one KG step, in the reference's own terms.

    ``kept_triples``: indices (into the graph's triple tensors) of the triples kept; ``ui``: the
    dense U x I interaction block after its dropout (kept entries already scaled by
    1/(1 - rate)); ``user_mask`` (U x d), ``entity_mask`` (E x d): message-dropout keep masks,
    applied with the usual 1/(1 - ``mess_rate``) scale.
    """

    kept_triples: set[int]
    ui: torch.Tensor
    user_mask: torch.Tensor
    entity_mask: torch.Tensor
    mess_rate: float


def reference_views(
    graph: GraphData,
    params: dict,
    n_layers: int,
    kg_view: str,
    user_softmax: bool,
    draws: list[StepDraws] | None = None,
):
    """(IG users, IG items, KG users, KG items) computed row by row; ``draws``: one per layer."""
    n_users, n_items = graph.n_users, graph.n_items
    adj = dense_norm_adjacency(graph)
    ui = adj[:n_users, n_users:]
    W = params["relation"]
    all_triples = list(
        zip(
            graph.kg_heads.tolist(),
            graph.kg_relations.tolist(),
            graph.kg_tails.tolist(),
            strict=True,
        )
    )

    def kg_forward(users, entities, step: StepDraws | None):
        triples = all_triples
        ui_step = ui
        if step is not None:
            triples = [t for k, t in enumerate(all_triples) if k in step.kept_triples]
            ui_step = step.ui
        new_entities = []
        for e in range(entities.shape[0]):
            mine = [(r, t) for h, r, t in triples if h == e]
            if not mine:
                new_entities.append(torch.zeros_like(entities[e]))
                continue
            scores = []
            for r, t in mine:
                # (|e_h * w_r| |e_t * w_r|)^2, squared norms multiplied (no sqrt: a zero
                # row would make sqrt's gradient infinite)
                head_sq = ((entities[e] * W[r]) ** 2).sum()
                tail_sq = ((entities[t] * W[r]) ** 2).sum()
                scores.append(head_sq * tail_sq)
            scores = torch.stack(scores)
            exps = torch.exp(scores - scores.max())
            soft = exps / exps.sum()
            total = torch.zeros_like(entities[e])
            for weight, (r, t) in zip(soft, mine, strict=True):
                total = total + weight * entities[t] * W[r]
            new_entities.append(total / len(mine))
        new_entities = torch.stack(new_entities)
        new_users = []
        for u in range(n_users):
            agg = torch.zeros_like(users[u])
            for i in range(n_items):
                if ui_step[u, i] != 0:
                    agg = agg + ui_step[u, i] * entities[i]
            affinity = torch.stack([(users[u] * W[k]).sum() for k in range(W.shape[0])])
            if user_softmax:
                affinity = torch.exp(affinity) / torch.exp(affinity).sum()
            mix = sum(affinity[k] * W[k] for k in range(W.shape[0]))
            new_users.append(agg + mix * agg)
        new_users = torch.stack(new_users)
        if step is not None:
            new_users = new_users * step.user_mask / (1 - step.mess_rate)
            new_entities = new_entities * step.entity_mask / (1 - step.mess_rate)

        def unit(rows):
            # x / max(|x|, 1e-12), with a zero row left at zero (and a zero gradient)
            return torch.stack(
                [row / torch.sqrt((row * row).sum().clamp_min(1e-24)) for row in rows]
            )

        return unit(new_users), unit(new_entities)

    x0 = torch.cat([params["user"], params["entity"]])
    x = x0
    kg = x0
    ig_layers, kg_layers = [], [x0]
    for layer in range(n_layers):
        ig = adj @ x[: n_users + n_items]
        source = x if kg_view == "fused" else kg
        step = None if draws is None else draws[layer]
        new_u, new_e = kg_forward(source[:n_users], source[n_users:], step)
        new = torch.cat([new_u, new_e])
        fused = new.clone()
        fused[: n_users + n_items] = fused[: n_users + n_items] + ig
        x = fused
        kg = new
        ig_layers.append(fused)
        kg_layers.append(fused if kg_view == "fused" else new)
    ig_mean = torch.stack(ig_layers).mean(0)
    kg_mean = torch.stack(kg_layers).mean(0)
    return (
        ig_mean[:n_users],
        ig_mean[n_users : n_users + n_items],
        kg_mean[:n_users],
        kg_mean[n_users : n_users + n_items],
    )


def reference_losses(views, params, users, pos, neg, reg_weight, cl_rate, tau):
    ig_u, ig_i, kg_u, kg_i = views
    bpr = 0.0
    for u, p, n in zip(users.tolist(), pos.tolist(), neg.tolist(), strict=True):
        diff = (ig_u[u] * ig_i[p]).sum() - (ig_u[u] * ig_i[n]).sum()
        bpr = bpr - torch.log(1e-10 + 1 / (1 + torch.exp(-diff)))
    reg = params["user"][users].norm() + params["entity"][pos].norm() + params["entity"][neg].norm()

    def nce(a, b):
        a = a / a.norm(dim=1, keepdim=True)
        b = b / b.norm(dim=1, keepdim=True)
        loss = 0.0
        for k in range(a.shape[0]):
            sims = torch.stack([(a[k] * b[j]).sum() / tau for j in range(b.shape[0])])
            loss = loss - torch.log(torch.exp(sims[k]) / torch.exp(sims).sum())
        return loss

    uu = sorted(set(users.tolist()))
    ii = sorted(set(pos.tolist()))
    cl = nce(ig_u[uu], kg_u[uu]) + nce(ig_i[ii], kg_i[ii])
    assert math.isfinite(float(cl.detach()))
    return {"bpr_reg": bpr + reg_weight * reg, "cl": cl_rate * cl}
