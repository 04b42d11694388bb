"""A deliberately plain KGIN (dense tensors, Python loops over entities, triples and pairs).

Written from RecBole 1.2.1's KGIN as its maths reads (the model file's docstring states it),
independently of the fast model, to check its embeddings, losses and gradients. Slow on purpose;
only for tiny graphs. Dropout is off unless the random draws of a forward are given
(``KGINDraws``), so that the fast model's own draws can be replayed here.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from simkgcl.graph import GraphData


@dataclass
class KGINDraws:
    """The random draws of one forward, in the reference's own terms.

    ``kept_triples``: indices (into the graph's triple tensors) of the triples sampled; ``ui``:
    the dense U x I interaction block after its dropout (kept entries already scaled);
    ``user_masks`` (U x d), ``entity_masks`` (E x d): one message-dropout keep mask per hop,
    applied with RecBole's 1/(1 - ``mess_rate``) scale.
    """

    kept_triples: set[int]
    ui: torch.Tensor
    user_masks: list[torch.Tensor]
    entity_masks: list[torch.Tensor]
    mess_rate: float


def dense_mean_interactions(graph: GraphData) -> torch.Tensor:
    """U x I: 1 / (number of distinct items of u) at each distinct (u, i) (RecBole's "si")."""
    ui = torch.zeros(graph.n_users, graph.n_items, dtype=torch.float64)
    for u, i in zip(graph.train_users.tolist(), graph.train_items.tolist(), strict=True):
        ui[u, i] = 1.0
    degree = ui.sum(dim=1, keepdim=True)
    return torch.where(degree > 0, ui / degree.clamp_min(1.0), ui)


def _unit(row: torch.Tensor) -> torch.Tensor:
    return row / torch.clamp(row.norm(), min=1e-12)


def reference_embeddings(graph: GraphData, params: dict, hops: int,
                         draws: KGINDraws | None = None):
    """(final user rows, final item rows): layer 0 plus the L2-normalised hops."""
    n_users, n_items, n_entities = graph.n_users, graph.n_items, graph.n_entities
    triples = list(zip(graph.kg_heads.tolist(), graph.kg_relations.tolist(),
                       graph.kg_tails.tolist(), strict=True))
    ui = dense_mean_interactions(graph)
    if draws is not None:
        triples = [t for k, t in enumerate(triples) if k in draws.kept_triples]
        ui = draws.ui
    W = params["relation"]
    intent_mix = torch.softmax(params["intent_logits"], dim=1) @ W  # F x d
    users, entities = params["user"], params["entity"]
    user_total, entity_total = users, entities
    for hop in range(hops):
        new_entities = []
        for h in range(n_entities):
            messages = [entities[t] * W[r] for hh, r, t in triples if hh == h]
            if messages:
                new_entities.append(torch.stack(messages).sum(0) / len(messages))
            else:
                new_entities.append(torch.zeros_like(entities[h]))
        new_entities = torch.stack(new_entities)
        new_users = []
        for u in range(n_users):
            gathered = sum(ui[u, i] * entities[i] for i in range(n_items))
            attention = torch.softmax(torch.stack([users[u] @ intent for intent in
                                                   params["intent"]]), dim=0)
            weighting = sum(attention[f] * intent_mix[f] for f in range(len(intent_mix)))
            new_users.append(weighting * gathered + gathered)
        new_users = torch.stack(new_users)
        if draws is not None and draws.user_masks:
            scale = 1.0 / (1.0 - draws.mess_rate)
            new_users = new_users * draws.user_masks[hop] * scale
            new_entities = new_entities * draws.entity_masks[hop] * scale
        users = torch.stack([_unit(row) for row in new_users])
        entities = torch.stack([_unit(row) for row in new_entities])
        user_total = user_total + users
        entity_total = entity_total + entities
    return user_total, entity_total[:n_items]


def cosine_pairs(logits: torch.Tensor) -> torch.Tensor:
    total = logits.new_zeros(())
    for i in range(logits.shape[0]):
        for j in range(i + 1, logits.shape[0]):
            total = total + (_unit(logits[i]) @ _unit(logits[j])) ** 2
    return total


def distance_correlation(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """KGIN's distance correlation of two vectors, element by element."""
    n = x.shape[0]

    def centred(v):
        a = torch.stack([torch.stack([
            torch.sqrt(torch.clamp(v[k] ** 2 - 2 * v[k] * v[m] + v[m] ** 2, min=0.0) + 1e-8)
            for m in range(n)]) for k in range(n)])
        return a - a.mean(0, keepdim=True) - a.mean(1, keepdim=True) + a.mean()

    a, b = centred(x), centred(y)

    def dcov(p, q):
        return torch.sqrt(torch.clamp((p * q).sum() / n**2, min=0.0) + 1e-8)

    return dcov(a, b) / torch.sqrt(dcov(a, a) * dcov(b, b) + 1e-8)


def distance_pairs(logits: torch.Tensor) -> torch.Tensor:
    total = logits.new_zeros(())
    for i in range(logits.shape[0]):
        for j in range(i + 1, logits.shape[0]):
            total = total + distance_correlation(logits[i], logits[j])
    return total


def mutual_information(logits: torch.Tensor, tau: float) -> torch.Tensor:
    units = [_unit(row) for row in logits]
    total = logits.new_zeros(())
    for i, a in enumerate(units):
        scores = torch.stack([torch.exp(a @ b / tau) for b in units])
        total = total - torch.log(scores[i] / scores.sum())
    return total


def reference_losses(user_rows, item_rows, params, users, pos, neg, *, reg_weight: float,
                     sim_regularity: float, ind: str, tau: float) -> dict[str, torch.Tensor]:
    """``bpr``, ``reg``, ``ind`` of one batch from the final rows."""
    bpr = []
    for u, p, n in zip(users.tolist(), pos.tolist(), neg.tolist(), strict=True):
        diff = user_rows[u] @ item_rows[p] - user_rows[u] @ item_rows[n]
        bpr.append(-torch.log(1e-10 + 1.0 / (1.0 + torch.exp(-diff))))
    norms = [rows.norm() for rows in (user_rows[users], item_rows[pos], item_rows[neg])]
    logits = params["intent_logits"]
    penalty = {"cosine": lambda: cosine_pairs(logits),
               "distance": lambda: distance_pairs(logits),
               "mi": lambda: mutual_information(logits, tau)}[ind]()
    return {
        "bpr": torch.stack(bpr).mean(),
        "reg": reg_weight * sum(norms) / len(users),
        "ind": sim_regularity * penalty,
    }
