"""MCCLK's kNN semantic graph built on every entity row vs only where the items' rows look.

MCCLK scores and trains on the item rows of its semantic view only, so its kNN graph is needed
at the items and, for their neighbours' row sums, at those neighbours
(:func:`simkgcl.models.ops.mixed_knn_graph`). This times one graph (the pair of kNN selections
MCCLK builds per refresh, from the model's own tables) both ways, in process CPU seconds (which
hardly move when other jobs share the cores), and counts the rows each selects over; then checks
that the items' semantic rows agree.

    OMP_NUM_THREADS=1 python bench/knn_rows.py --dataset ../shared/splits/ml-100k \\
        [--checkpoint RUN/checkpoints/best.pt]

Without ``--checkpoint`` the tables are the initial (random) ones, where neighbours are spread
over all entities: the least the restriction saves. A trained model's neighbours cluster.
"""

from __future__ import annotations

import argparse
import logging
import time

import torch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", default="../shared/splits/ml-100k")
    parser.add_argument("--checkpoint", help="a training checkpoint of MCCLK on that dataset")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=3, help="timed rounds (the best is kept)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.getLogger("simkgcl").setLevel(logging.WARNING)

    from simkgcl.config import Config
    from simkgcl.models.ops import fixed_width_matmul, layer_mean, mixed_knn_graph
    from simkgcl.training.checkpoint import load_checkpoint, load_model_weights
    from simkgcl.training.components import build_components, load_data

    config = Config({"model": "mcclk", "dataset": args.dataset, "show_progress": False})
    dataset, split = load_data(config)
    model = build_components(config, dataset, split, torch.device("cpu")).model
    if args.checkpoint:
        load_model_weights(model, load_checkpoint(args.checkpoint)["model"], args.checkpoint)
    model.eval()

    captured = {}

    def capture(aggregated, entities):
        captured["tables"] = (aggregated, entities)
        return original(aggregated, entities)

    original, model._knn_graph = model._knn_graph, capture
    with torch.no_grad():
        model.views()
    tables = captured["tables"]
    weights = (1.0 - model.lambda_coeff, model.lambda_coeff)
    n_entities, n_items = tables[0].shape[0], model.n_items

    def timed(n_targets: int) -> tuple[float, tuple[torch.Tensor, torch.Tensor]]:
        best, graph = float("inf"), None
        for _ in range(args.rounds):
            start = time.process_time()
            graph = mixed_knn_graph(tables, weights, model.k, n_targets, model.item_agg_layer)
            best = min(best, time.process_time() - start)
        return best, graph

    full_s, full = timed(n_entities)
    rows_s, rows = timed(n_items)
    selected = torch.unique(torch.cat([torch.arange(n_items),
                                       rows[0][:n_items].reshape(-1)])).numel()
    entities = tables[1]  # MCCLK's semantic view: the layer mean of e and S e, read at the items
    semantic = [layer_mean([entities, fixed_width_matmul(*graph, entities)])[:n_items]
                for graph in (full, rows)]
    print(f"{args.dataset}: {n_items} items, {n_entities} entities, k = {model.k}, "
          f"{'checkpoint ' + args.checkpoint if args.checkpoint else 'initial weights'}")
    print(f"every row:        {full_s:.3f} CPU s ({n_entities} rows selected over)")
    print(f"items' rows only: {rows_s:.3f} CPU s (the items and their neighbours: {selected} "
          f"distinct rows over both selections) -> {full_s / rows_s:.2f}x")
    print(f"items' semantic rows, max |difference|: "
          f"{(semantic[0] - semantic[1]).abs().max().item():.3g}")


if __name__ == "__main__":
    main()
