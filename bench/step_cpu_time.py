"""CPU seconds per training step (forward + backward of one batch) of a model, in one process.

Process CPU time, unlike wall time, hardly moves when other jobs share the cores, so two versions
of the code can be compared on a busy machine: run this once per version, alternating, and
compare the best figures. No optimiser step (the parameters stay fixed, every step is the same
work); dropout is on, as in training.

    OMP_NUM_THREADS=1 python bench/step_cpu_time.py --model simkgcl --dataset ../shared/splits/lastfm-kg
        [--checkpoint RUN/checkpoints/best.pt] [key=value ...]
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable


def cpu_seconds_per_step(step: Callable[[], None], steps: int, rounds: int) -> list[float]:
    """CPU seconds per call of ``step`` in each of ``rounds`` rounds of ``steps`` calls, after
    5 warm-up calls."""
    for _ in range(5):
        step()
    seconds = []
    for _ in range(rounds):
        start = time.process_time()
        for _ in range(steps):
            step()
        seconds.append((time.process_time() - start) / steps)
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="simkgcl")
    parser.add_argument("--dataset", default="lastfm-kg", help="dataset folder or bundled name")
    parser.add_argument("--batch", type=int, default=2048)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=10, help="steps per timed round")
    parser.add_argument("--rounds", type=int, default=5, help="timed rounds (the best is kept)")
    parser.add_argument("--shuffle", action="store_true",
                        help="a random batch of training rows, as the sampler draws them (default: "
                             "the first rows, which hold fewer distinct users)")
    parser.add_argument("--checkpoint", help="start from a training checkpoint's weights (some "
                        "models' work depends on them: MCCLK's kNN rows)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(args.threads)
    from simkgcl.config import Config
    from simkgcl.graph import build_graph
    from simkgcl.models import get_model_class
    from simkgcl.sampling.negative import MODEL_EPOCH_STREAM, epoch_generator
    from simkgcl.training.run import load_data

    config = Config({"model": args.model, "dataset": args.dataset}, overrides=args.overrides)
    dataset, split = load_data(config)
    torch.manual_seed(config["seed"])
    model = get_model_class(config["model"])(build_graph(dataset, split), config)
    if args.checkpoint:
        from simkgcl.training.checkpoint import load_checkpoint, load_model_weights

        load_model_weights(model, load_checkpoint(args.checkpoint)["model"], args.checkpoint)
    model.train()
    # per-epoch draws (SGL's augmented graphs) as the trainer makes them before epoch 0
    model.on_epoch_start(0, epoch_generator(config["seed"], 0, MODEL_EPOCH_STREAM))
    generator = torch.Generator().manual_seed(config["seed"])
    rows = (torch.randperm(len(split.train), generator=generator)[: args.batch] if args.shuffle
            else torch.arange(min(args.batch, len(split.train))))
    users = torch.as_tensor(split.train.users)[rows].long()
    pos_items = torch.as_tensor(split.train.items)[rows].long()
    neg_items = torch.randint(0, dataset.n_items, (users.shape[0],), generator=generator)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        sum(model(users, pos_items, neg_items).values()).backward()

    rounds = cpu_seconds_per_step(step, args.steps, args.rounds)
    print(f"{args.model} {args.dataset}: CPU s/step best {min(rounds):.4f}, "
          f"rounds {', '.join(f'{r:.4f}' for r in rounds)} ({args.threads} thread(s))")


if __name__ == "__main__":
    main()
