"""LightGCN's propagation: linear layers on normalised graphs, the layers averaged.

With ``A_l`` the graph of layer ``l`` (``D^-1/2 A D^-1/2`` from
:mod:`~simkgcl.models.ops.adjacency`) and ``p`` an optional per-layer perturbation::

    e^(0) = x,   e^(l+1) = p(A_l e^(l))          l = 0 .. L-1

:func:`propagate_layers` returns ``[e^(1), ..., e^(L)]``; :func:`layer_mean` averages a list of
layers in order (``(e^(0) + e^(1) + ... + e^(L)) / (L + 1)`` for LightGCN and SGL, the same
without ``e^(0)`` for SimGCL and XSimGCL). The perturbed output is what the next layer reads
(SimGCL adds its noise "at each layer"). One graph serves every layer in LightGCN; SGL's random
walk draws one per layer, hence a sequence of ``(pattern, values)`` pairs.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

from torch import Tensor

from simkgcl.models.ops.sparse import SparsePattern

Graph = tuple[SparsePattern, Tensor]
"""A sparse matrix: its fixed pattern and its entry values (see :class:`SparsePattern`)."""


def propagate_layers(
    x: Tensor, graphs: Sequence[Graph], perturb: Callable[[Tensor], Tensor] | None = None
) -> list[Tensor]:
    """Outputs of the layers ``e^(1) .. e^(L)``, one per graph, each read by the next."""
    outputs = []
    for pattern, values in graphs:
        x = pattern.matmul(values, x)
        if perturb is not None:
            x = perturb(x)
        outputs.append(x)
    return outputs


def layer_mean(layers: Sequence[Tensor]) -> Tensor:
    """Mean of the layers, summed left to right (the same rounding as LightGCN's running sum)."""
    total = layers[0]
    for layer in layers[1:]:
        total = total + layer
    return total / len(layers)
