"""Plain SimGCL and XSimGCL (dense matrices, Python loops over rows), as SELFRec computes them.

Written from the papers and SELFRec's description (mean of layers 1..L, sign-aligned noise of
norm eps after every layer, BPR mean with 1e-5 inside the log, L2 of the propagated user and
positive rows over the batch size, InfoNCE means over distinct ids), independently of
``simkgcl.models``. The noise directions are given (one ``(U + I) x d`` tensor per perturbed
layer, in the order the fast model draws them) so that its draws can be replayed here.
"""

from __future__ import annotations

import torch


def layers(x, adj, n_layers, eps=0.0, directions=None):
    """Outputs of layers 1..L; with ``directions`` each is moved by eps sign(.) direction."""
    out, e = [], x
    for layer in range(n_layers):
        e = adj @ e
        if directions is not None:
            noise = torch.zeros_like(e)
            for r in range(e.shape[0]):
                for c in range(e.shape[1]):
                    sign = 0.0 if e[r, c] == 0 else (1.0 if e[r, c] > 0 else -1.0)
                    noise[r, c] = eps * sign * directions[layer][r, c]
            e = e + noise
        out.append(e)
    return out


def mean(tensors):
    return sum(tensors) / len(tensors)


def info_nce_mean(view1, view2, rows, tau):
    """Mean over ``rows`` of -log softmax of the own row among ``rows`` (cosine / tau)."""
    total = 0.0
    for i in rows:
        logits = torch.stack([
            view1[i] @ view2[j] / (view1[i].norm() * view2[j].norm()) / tau for j in rows
        ])
        total = total - torch.log_softmax(logits, 0)[rows.index(i)]
    return total / len(rows)


def rec_terms(final, n_users, users, pos, neg, reg_weight):
    bpr, u_rows, p_rows = 0.0, [], []
    for u, p, n in zip(users.tolist(), pos.tolist(), neg.tolist(), strict=True):
        diff = final[u] @ final[n_users + p] - final[u] @ final[n_users + n]
        bpr = bpr - torch.log(1e-5 + torch.sigmoid(diff))
        u_rows.append(final[u])
        p_rows.append(final[n_users + p])
    reg = (torch.stack(u_rows).norm() + torch.stack(p_rows).norm()) / len(users)
    return {"bpr": bpr / len(users), "reg": reg_weight * reg}


def contrast(view1, view2, n_users, users, pos, cl_rate, tau):
    user_rows = sorted(set(users.tolist()))
    item_rows = sorted(n_users + i for i in set(pos.tolist()))
    return cl_rate * (info_nce_mean(view1, view2, user_rows, tau)
                      + info_nce_mean(view1, view2, item_rows, tau))


def simgcl_terms(x, adj, n_layers, n_users, batch, directions, eps, cl_rate, tau, reg_weight):
    """SimGCL: clean view for BPR + L2; two perturbed views (directions[:L], [L:]) for InfoNCE."""
    users, pos, neg = batch
    terms = rec_terms(mean(layers(x, adj, n_layers)), n_users, users, pos, neg, reg_weight)
    view1 = mean(layers(x, adj, n_layers, eps, directions[:n_layers]))
    view2 = mean(layers(x, adj, n_layers, eps, directions[n_layers:]))
    terms["cl"] = contrast(view1, view2, n_users, users, pos, cl_rate, tau)
    return terms


def xsimgcl_terms(x, adj, n_layers, cl_layer, n_users, batch, directions, eps, cl_rate, tau,
                  reg_weight):
    """XSimGCL: one perturbed pass; BPR + L2 on its mean, InfoNCE against layer ``cl_layer``."""
    users, pos, neg = batch
    perturbed = layers(x, adj, n_layers, eps, directions)
    final = mean(perturbed)
    terms = rec_terms(final, n_users, users, pos, neg, reg_weight)
    cross = x if cl_layer == 0 else perturbed[cl_layer - 1]
    terms["cl"] = contrast(final, cross, n_users, users, pos, cl_rate, tau)
    return terms
