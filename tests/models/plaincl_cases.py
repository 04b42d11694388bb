"""Shared set-up of the SGL / SimGCL / XSimGCL tests: a batch, the term-and-gradient comparison
with a reference, and a short training run through the engine."""

from __future__ import annotations

import torch

from simkgcl.artifact import load_artifact
from simkgcl.config import Config
from simkgcl.training.run import train
from tests.training.engine_fixtures import make_tiny_data

BATCH = (
    torch.tensor([0, 2, 2, 4, 1, 2]),
    torch.tensor([0, 3, 5, 1, 2, 3]),
    torch.tensor([4, 1, 0, 2, 5, 2]),
)
TIGHT = 1e-10  # float64: the fast models and the references agree to ~1e-14


def assert_close_terms_and_grads(terms, ref_terms, params, names) -> None:
    """Equal loss terms, and equal gradients of each term for every parameter."""
    assert set(terms) == set(ref_terms) == names
    for name in names:
        torch.testing.assert_close(terms[name], ref_terms[name], atol=TIGHT, rtol=0)
        grads = torch.autograd.grad(terms[name], params, retain_graph=True, allow_unused=True)
        ref_grads = torch.autograd.grad(ref_terms[name], params, retain_graph=True,
                                        allow_unused=True)
        for k, (got, want) in enumerate(zip(grads, ref_grads, strict=True)):
            got = torch.zeros_like(params[k]) if got is None else got
            want = torch.zeros_like(params[k]) if want is None else want
            torch.testing.assert_close(got, want, atol=TIGHT, rtol=0,
                                       msg=lambda m, n=name, k=k: f"{n} / param {k}: {m}")


def ranks_training_items(model: str, tmp_path, **overrides) -> None:
    """Train ``model`` on the tiny dataset through ``train``; the loss falls and the final
    embeddings rank each user's training items above the other items (AUC > 0.8; random 0.5).

    The tiny dataset's interactions are random, so validation carries no signal: the model is
    validated once, after the last epoch, which therefore is the best one."""
    data = make_tiny_data()
    epochs = 25
    config = Config(model=model, epochs=epochs, eval_step=epochs, learning_rate=0.01,
                    train_batch_size=64, embedding_size=16, show_progress=False, device="cpu",
                    checkpoint_dir=str(tmp_path), topk=[5, 10], valid_metric="NDCG@10", seed=3,
                    **overrides)
    result = train(config, data=data)
    losses = [record["loss"] for record in result.history]
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]
    artifact = load_artifact(result.run_dir)
    scores = artifact.user_embeddings @ artifact.item_embeddings.t()
    _, split = data
    seen = torch.zeros_like(scores, dtype=torch.bool)
    seen[torch.as_tensor(split.train.users), torch.as_tensor(split.train.items)] = True
    aucs = []
    for user in range(scores.shape[0]):
        pos, neg = scores[user][seen[user]], scores[user][~seen[user]]
        aucs.append((pos[:, None] > neg[None, :]).double().mean())
    assert float(torch.stack(aucs).mean()) > 0.8
