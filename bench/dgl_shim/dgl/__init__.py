"""A stand-in for the three DGL calls RecBole 1.2.1's KGAT makes, so that RecBole's own KGAT
runs in ``../shared/reference``'s environment (which has no DGL) as a yardstick for ours.

Never imported by simkgcl: put this folder on ``PYTHONPATH`` for the reference only,
    PYTHONPATH=bench/dgl_shim ../shared/reference/run_model.sh KGAT lastfm-kg 300 out.json

Semantics as DGL >= 0.5 documents them: graph((src, dst)) has max(id) + 1 nodes; an edge
subgraph with preserve_nodes keeps every node; adjacency_matrix(transpose=False) has the
source as row, one entry per edge (duplicates kept, summed by scipy on conversion).
"""
import numpy as np
import scipy.sparse as sp
import torch


class _Edges:
    def __init__(self, data):
        self.data = data


class Graph:
    def __init__(self, src, dst, n_nodes=None):
        self.src = torch.as_tensor(src).long()
        self.dst = torch.as_tensor(dst).long()
        self.n = int(n_nodes if n_nodes is not None
                     else max(int(self.src.max()), int(self.dst.max())) + 1)
        self.edata = {}

    def num_nodes(self):
        return self.n

    def filter_edges(self, predicate):
        return torch.nonzero(predicate(_Edges(self.edata))).flatten()

    def adjacency_matrix(self, transpose=False, scipy_fmt="coo"):
        assert scipy_fmt == "coo"
        row, col = (self.dst, self.src) if transpose else (self.src, self.dst)
        return sp.coo_matrix((np.ones(len(row)), (row.numpy(), col.numpy())),
                             shape=(self.n, self.n))


def graph(edges):
    return Graph(*edges)


def edge_subgraph(g, edge_idxs, preserve_nodes=False):
    assert preserve_nodes
    return Graph(g.src[edge_idxs], g.dst[edge_idxs], g.n)
