"""Checkpoints that are written atomically and load with ``torch.load(weights_only=True)``.

A checkpoint is a plain dict of tensors, numbers, strings, lists and dicts: random-number states
are converted to tensors and lists instead of being pickled as Python objects, so loading one
never executes code. Writing goes to a temporary file in the same folder, is flushed and fsynced,
and then renamed over the old file: a crash while saving leaves the previous checkpoint intact.
"""

from __future__ import annotations

import io
import random
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from simkgcl.errors import ArtifactError
from simkgcl.fileio import atomic_write_bytes, safe_torch_load

CHECKPOINT_FORMAT = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    buffer = io.BytesIO()
    torch.save({"format": CHECKPOINT_FORMAT, **payload}, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def load_checkpoint(path: str | Path, map_location: torch.device | str = "cpu") -> dict[str, Any]:
    """Load a checkpoint safely (no pickled code); clear error if missing or corrupt."""
    p = Path(path)
    if not p.is_file():
        raise ArtifactError(f"{p}: checkpoint not found")
    data = safe_torch_load(p, map_location=map_location)
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise ArtifactError(f"{p}: not a simkgcl checkpoint of format {CHECKPOINT_FORMAT}")
    return data


def capture_rng_state() -> dict[str, Any]:
    """Python, numpy and torch (CPU and CUDA) random states as tensors and plain values."""
    version, internal, gauss = random.getstate()
    np_state = np.random.get_state(legacy=True)
    assert isinstance(np_state, tuple)
    name, keys, pos, has_gauss, cached = np_state
    state: dict[str, Any] = {
        "python": {"version": int(version), "state": torch.tensor(internal, dtype=torch.int64),
                   "gauss": gauss},
        "numpy": {"name": str(name), "keys": torch.from_numpy(keys.astype(np.int64)),
                  "pos": int(pos), "has_gauss": int(has_gauss), "cached": float(cached)},
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict[str, Any]) -> None:
    py = state["python"]
    random.setstate((py["version"], tuple(int(x) for x in py["state"].tolist()), py["gauss"]))
    npst = state["numpy"]
    np.random.set_state((npst["name"], npst["keys"].numpy().astype(np.uint32), npst["pos"],
                         npst["has_gauss"], npst["cached"]))
    torch.set_rng_state(state["torch"].cpu())
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = [s.cpu() for s in state["cuda"]]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)


# ---------------------------------------------------------------------------------------------
# content checks: a loaded checkpoint must hold what the code reading it expects, or the reader
# gets one line naming the file (never a KeyError or a shape mismatch from deep inside torch)


def require_entries(ckpt: Mapping[str, Any], path: str | Path, entries: Mapping[str, type | tuple]
                    ) -> None:
    """Every key of ``entries`` is in ``ckpt`` with a value of the given type(s)."""
    for key, kind in entries.items():
        if key not in ckpt:
            raise ArtifactError(f"{path}: not a complete checkpoint (no {key!r} entry)")
        if not isinstance(ckpt[key], kind):
            raise ArtifactError(f"{path}: checkpoint entry {key!r} is a "
                                f"{type(ckpt[key]).__name__}, not what this version writes")


def load_model_weights(model: torch.nn.Module, weights: Any, path: str | Path) -> None:
    """Load ``weights`` into ``model`` after checking their names and shapes against it."""
    if not isinstance(weights, Mapping):
        raise ArtifactError(f"{path}: the model weights are a {type(weights).__name__}, "
                            "not a mapping of tensors")
    expected = model.state_dict()
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_names(missing)}")
        if unexpected:
            parts.append(f"unexpected {_names(unexpected)}")
        raise ArtifactError(f"{path}: weights do not fit this {type(model).__name__} model "
                            f"({'; '.join(parts)})")
    for name, want in expected.items():
        got = weights[name]
        if not isinstance(got, torch.Tensor):
            raise ArtifactError(f"{path}: weight {name!r} is a {type(got).__name__}, not a tensor")
        if got.shape != want.shape:
            raise ArtifactError(f"{path}: weight {name!r} has shape {tuple(got.shape)}, this "
                                f"model needs {tuple(want.shape)} (a different config or data?)")
        if got.dtype.is_floating_point != want.dtype.is_floating_point:
            raise ArtifactError(f"{path}: weight {name!r} has dtype {got.dtype}, this model "
                                f"needs {want.dtype}")
    model.load_state_dict(weights)


def _names(names: list[str], limit: int = 3) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")
