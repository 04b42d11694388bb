"""TransE's margin-free BPR loss on KG triples, as KGCL's ``calc_kg_loss_transE`` computes it::

    f(h, r, t) = |e_h + e_r - e_t|^2
    L = mean_b -log sigmoid( f(h, r, t-) - f(h, r, t+) )
        + reg_weight * sum_{x in (e_h, e_r, e_t+, e_t-)} mean_b |x_b|^2 / 2

for a batch of heads ``h``, relations ``r``, true tails ``t+`` and corrupted tails ``t-`` (the
rows are given already gathered: the caller decides which tables hold heads and tails).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor


def transe_bpr_loss(
    heads: Tensor, relations: Tensor, pos_tails: Tensor, neg_tails: Tensor, reg_weight: float
) -> Tensor:
    """The batch loss of the module docstring for row-aligned ``(B, d)`` embeddings."""
    translated = heads + relations
    pos = (translated - pos_tails).pow(2).sum(dim=1)
    neg = (translated - neg_tails).pow(2).sum(dim=1)
    loss = -F.logsigmoid(neg - pos).mean()
    l2 = sum(x.pow(2).sum(dim=1).mean() / 2.0 for x in (heads, relations, pos_tails, neg_tails))
    return loss + reg_weight * l2
