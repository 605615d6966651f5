"""Checkpoints: written atomically, read without unpickling anything but tensors and plain data."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import torch

from gliomaseg.errors import InputError
from gliomaseg.io.atomic import atomic_path


def save_checkpoint(state: dict[str, Any], path: Path | str) -> Path:
    """Write ``state`` (tensors, numbers, strings, lists, dicts) to ``path`` atomically."""
    with atomic_path(path) as tmp:
        torch.save(state, tmp)
    return Path(path)


def load_checkpoint(path: Path | str, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``: a file carrying code is refused, not run."""
    path = Path(path)
    if not path.exists():
        raise InputError(path, "checkpoint does not exist")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unsupported content"
        raise InputError(path, f"refused: checkpoint holds objects other than weights ({first})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as err:
        raise InputError(path, f"corrupt or truncated checkpoint ({str(err).splitlines()[0]})") from None
    if not isinstance(state, dict) or "model" not in state or "config" not in state:
        raise InputError(path, "not a gliomaseg checkpoint (no model weights and config)")
    return state
