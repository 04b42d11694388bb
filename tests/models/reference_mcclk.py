"""MCCLK written plainly, as RecBole 1.2.1's ``mcclk.py`` reads (dropout off): loops over
entities and triples, dense matrices, a full sort for the kNN graph, the contrastive losses on
every row of the batch (duplicates included). Shares no code with ``simkgcl.models``; slow, for
the toy graph only."""

from __future__ import annotations

import torch

from simkgcl.graph import GraphData

Params = dict[str, torch.Tensor]


def unit_rows(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([row / torch.sqrt((row * row).sum()).clamp_min(1e-12) for row in x])


def mean_interactions(graph: GraphData) -> torch.Tensor:
    """U x I: 1 / deg(u) at the user's distinct items."""
    pairs = set(zip(graph.train_users.tolist(), graph.train_items.tolist(), strict=True))
    ui = torch.zeros(graph.n_users, graph.n_items, dtype=torch.float64)
    for u, i in pairs:
        ui[u, i] = 1.0
    return ui / ui.sum(1, keepdim=True).clamp_min(1.0)


def kg_hops(graph: GraphData, params: Params, hops: int, attentive: bool):
    """Layer means of (users, entities) over ``hops`` hops (users None without attention)."""
    triples = list(zip(graph.kg_heads.tolist(), graph.kg_relations.tolist(),
                       graph.kg_tails.tolist(), strict=True))
    w = params["relation"]
    ui = mean_interactions(graph)
    users, entities = params["user"], params["entity"]
    user_layers, entity_layers = [users], [entities]
    for _ in range(hops):
        new_entities = torch.zeros_like(entities)
        for head in range(graph.n_entities):
            mine = [(r, t) for h, r, t in triples if h == head]
            if not mine:
                continue
            messages = [entities[t] * w[r] for r, t in mine]
            if attentive:
                scores = torch.stack([
                    (torch.linalg.norm(entities[head] * w[r]) * torch.linalg.norm(entities[t] * w[r]))
                    ** 2 for r, t in mine])
                weights = torch.exp(scores) / torch.exp(scores).sum()
            else:
                weights = torch.ones(len(mine), dtype=torch.float64)
            new_entities[head] = sum(a * m for a, m in zip(weights, messages, strict=True)) / len(mine)
        if attentive:
            agg = ui @ entities[: graph.n_items]
            attention = torch.softmax(users @ w.t(), dim=1)
            users = unit_rows(agg + (attention @ w) * agg)
            user_layers.append(users)
        entities = unit_rows(new_entities)
        entity_layers.append(entities)
    mean_users = sum(user_layers) / len(user_layers) if attentive else None
    return mean_users, sum(entity_layers) / len(entity_layers)


def knn_matrix(x: torch.Tensor, k: int) -> torch.Tensor:
    """Dense D^-1/2 S_k D^-1/2 (S_k: each row's k largest cosines, found by a full sort); a
    constant, as RecBole builds it from ``.data``."""
    y = unit_rows(x.detach())
    sims = y @ y.t()
    adj = torch.zeros_like(sims)
    for i in range(sims.shape[0]):
        for j in torch.argsort(sims[i], descending=True)[:k].tolist():
            adj[i, j] = sims[i, j]
    d = adj.sum(1)
    return adj / torch.sqrt(d)[:, None] / torch.sqrt(d)[None, :]


def collaborative(graph: GraphData, params: Params, layers: int):
    """LightGCN on D^-1 A over [users; items]: (users, items) layer means."""
    n_users, n = graph.n_users, graph.n_users + graph.n_items
    adj = torch.zeros(n, n, dtype=torch.float64)
    for u, i in zip(graph.train_users.tolist(), graph.train_items.tolist(), strict=True):
        adj[u, n_users + i] = adj[n_users + i, u] = 1.0
    adj = adj / adj.sum(1, keepdim=True).clamp_min(1.0)
    x = torch.cat([params["user"], params["entity"][: graph.n_items]])
    out = [x]
    for _ in range(layers):
        out.append(adj @ out[-1])
    mean = sum(out) / len(out)
    return mean[:n_users], mean[n_users:]


def reference_views(graph: GraphData, params: Params, cfg: dict):
    """(structural users, structural entities, collaborative users, items, semantic entities)."""
    users_s, entities_s = kg_hops(graph, params, cfg["n_hops"], attentive=True)
    if cfg["build_graph_separately"]:
        _, aggregated = kg_hops(graph, params, cfg["n_hops"], attentive=False)
    else:
        aggregated = entities_s
    lam = cfg["lambda_coeff"]
    graph_s = (1 - lam) * knn_matrix(aggregated, cfg["k"]) + lam * knn_matrix(params["entity"],
                                                                              cfg["k"])
    layers = [params["entity"]]
    for _ in range(cfg["item_agg_layer"]):
        layers.append(graph_s @ layers[-1])
    semantic = sum(layers) / len(layers)
    users_c, items_c = collaborative(graph, params, cfg["lightgcn_layer"])
    return users_s, entities_s, users_c, items_c, semantic


def mlp(x: torch.Tensor, params: Params, name: str) -> torch.Tensor:
    hidden = torch.relu(x @ params[f"{name}.0.weight"].t() + params[f"{name}.0.bias"])
    return hidden @ params[f"{name}.2.weight"].t() + params[f"{name}.2.bias"]


def one_way(a: torch.Tensor, b: torch.Tensor, tau: float) -> torch.Tensor:
    """RecBole's per-row loss -log(between_ii / (refl.sum - refl_ii + between.sum)), the
    diagonal masked out rather than subtracted (no cancellation at small temperatures)."""
    ua, ub = unit_rows(a), unit_rows(b)
    refl = torch.exp(ua @ ua.t() / tau)
    between = torch.exp(ua @ ub.t() / tau)
    others = 1.0 - torch.eye(len(a), dtype=refl.dtype)
    return -torch.log(between.diag() / ((refl * others).sum(1) + between.sum(1)))


def reference_losses(views, params: Params, users, pos, neg, cfg: dict) -> dict:
    users_s, entities_s, users_c, items_c, semantic = views
    items = torch.cat([pos, neg])
    tau = cfg["temperature"]
    m, c, s = semantic[items], items_c[items], entities_s[items]
    local = one_way(mlp(m, params, "fc1"), mlp(c, params, "fc1"), tau).mean()
    a, b = mlp(users_s[users], params, "fc2"), mlp(users_c[users], params, "fc2")
    global_users = ((one_way(a, b, tau) + one_way(b, a, tau)) / 2).mean()
    a, b = mlp(s, params, "fc3"), mlp(m + c, params, "fc3")
    global_items = ((one_way(a, b, tau) + one_way(b, a, tau)) / 2).mean()
    user_rows = torch.cat([users_s[users], users_c[users]], dim=1)
    item_rows = torch.cat([s, m + c], dim=1)
    n = len(users)
    pos_scores = (user_rows * item_rows[:n]).sum(1)
    neg_scores = (user_rows * item_rows[n:]).sum(1)
    if cfg["loss_type"] == "bpr":
        rec = {"bpr": -torch.log(1e-10 + torch.sigmoid(pos_scores - neg_scores)).mean()}
    else:
        logits = torch.cat([pos_scores, neg_scores])
        p = 1.0 / (1.0 + torch.exp(-logits))
        target = torch.cat([torch.ones(n), torch.zeros(n)]).double()
        rec = {"bce": -(target * torch.log(p) + (1 - target) * torch.log(1 - p)).mean()}
    norms = sum(torch.sqrt((x * x).sum()) for x in (user_rows, item_rows[:n], item_rows[n:]))
    beta, alpha = cfg["beta"], cfg["alpha"]
    return {
        **rec,
        "reg": cfg["reg_weight"] * norms / n,
        "cl_local": beta * alpha * local,
        "cl_global": beta * (1 - alpha) * (global_users + global_items),
    }
