"""Per-user metric values of one evaluation, and their file (``.npz`` that loads without pickle).

The evaluator averages each ranking metric over the users with held-out items; the values behind
those averages are what user groups (:mod:`simkgcl.evaluation.groups`) and paired significance
tests between runs need. A run keeps its test values in an ``.npz`` file keyed by the user's own
token, so two runs on the same data are paired user by user whatever their internal ids:

* ``user``: the user tokens (a unicode array, never objects), one per evaluated user;
* ``n_train``: training interactions of each user; ``n_heldout``: held-out items of each user;
* ``metrics``: the metric names, in report order; one float64 array per name (``"NDCG@20"`` ...).

:func:`np.load` reads it with ``allow_pickle=False``: loading never executes code.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simkgcl.errors import ArtifactError
from simkgcl.fileio import atomic_output

_COLUMNS = ("user", "n_train", "n_heldout", "metrics")


@dataclass
class PerUserMetrics:
    """Every evaluated user's value of each ranking metric (row ``r`` is user ``users[r]``).

    ``users`` holds internal ids straight from the evaluator and tokens once read from a file;
    ``n_train`` (training interactions per row) is known once attached with :meth:`labelled`.
    """

    users: np.ndarray
    n_heldout: np.ndarray
    values: dict[str, np.ndarray]
    n_train: np.ndarray | None = None

    def __len__(self) -> int:
        return int(self.users.shape[0])

    @property
    def metric_names(self) -> list[str]:
        return list(self.values)

    @classmethod
    def concat(cls, parts: Sequence[PerUserMetrics]) -> PerUserMetrics:
        """Rows of ``parts`` one after the other (e.g. the shares of several processes)."""
        names = parts[0].metric_names
        return cls(
            users=np.concatenate([p.users for p in parts]),
            n_heldout=np.concatenate([p.n_heldout for p in parts]),
            values={n: np.concatenate([p.values[n] for p in parts]) for n in names},
            n_train=(None if any(p.n_train is None for p in parts)
                     else np.concatenate([p.n_train for p in parts])),  # type: ignore[misc]
        )

    def labelled(self, user_tokens: np.ndarray, train_users: np.ndarray,
                 n_users: int) -> PerUserMetrics:
        """Rows keyed by user token, with each user's number of training interactions."""
        ids = np.asarray(self.users, dtype=np.int64)
        counts = np.bincount(np.asarray(train_users, dtype=np.int64), minlength=n_users)
        return PerUserMetrics(users=np.asarray(user_tokens)[ids].astype(str),
                              n_heldout=self.n_heldout, values=self.values,
                              n_train=counts[ids].astype(np.int64))

    def means(self) -> dict[str, float]:
        """Average of each metric over the rows (what the evaluator reports)."""
        return {n: float(v.mean()) if len(v) else 0.0 for n, v in self.values.items()}

    def save(self, path: str | Path) -> None:
        """Write the ``.npz`` file described in the module docstring (needs :meth:`labelled`)."""
        if self.n_train is None:
            raise ValueError("attach training counts (labelled) before saving")
        clash = [n for n in self.values if n in _COLUMNS]
        if clash:
            raise ValueError(f"metric names clash with columns: {clash}")
        arrays: dict[str, np.ndarray] = {
            "user": np.asarray(self.users).astype(str),
            "n_train": np.asarray(self.n_train, dtype=np.int64),
            "n_heldout": np.asarray(self.n_heldout, dtype=np.int64),
            "metrics": np.asarray(self.metric_names, dtype=str),
        }
        arrays.update({n: np.asarray(v, dtype=np.float64) for n, v in self.values.items()})
        with atomic_output(path) as fh:
            np.savez_compressed(fh, **arrays)  # type: ignore[arg-type]

    @classmethod
    def load(cls, path: str | Path) -> PerUserMetrics:
        """Read a file written by :meth:`save` (no pickle)."""
        p = Path(path)
        if not p.is_file():
            raise ArtifactError(f"{p}: no per-user metrics file")
        try:
            with np.load(p, allow_pickle=False) as data:
                missing = [c for c in _COLUMNS if c not in data.files]
                if missing:
                    raise ArtifactError(f"{p}: not a per-user metrics file (missing "
                                        f"{', '.join(missing)})")
                names = [str(n) for n in data["metrics"]]
                return cls(users=data["user"], n_heldout=data["n_heldout"],
                           values={n: data[n] for n in names}, n_train=data["n_train"])
        except (OSError, ValueError, KeyError) as exc:
            raise ArtifactError(f"{p}: cannot read per-user metrics ({exc})") from exc
