"""Local weight files for the learned metrics: find them, load them safely, fingerprint them.

Nothing here downloads. A learned metric looks for its weights in this order:

1. the explicit path it was given (``weights=``); a path that does not exist is an error;
2. ``<torch hub dir>/checkpoints/<file name>`` for each of its known file names, where the
   hub dir is :func:`torch.hub.get_dir` (``$TORCH_HOME/hub``, default ``~/.cache/torch/hub``):
   the place torchvision and torch-fidelity cache their downloads, so weights fetched once
   by either are found here;
3. otherwise a :class:`FileNotFoundError` naming the file, the folder and the URL to get it from.

Files load with ``torch.load(map_location="cpu", weights_only=True)`` or safetensors, so a
checkpoint can never run code.
"""
from __future__ import annotations

import hashlib
import os
from collections.abc import Sequence
from pathlib import Path

import torch


def hub_checkpoints_dir() -> Path:
    """``$TORCH_HOME/hub/checkpoints`` (torch's rule, honouring ``TORCH_HOME``/``XDG_CACHE_HOME``)."""
    return Path(torch.hub.get_dir()) / "checkpoints"


def resolve_weights(
    weights: str | os.PathLike | None,
    *,
    file_names: Sequence[str],
    what: str,
    source: str,
    argument: str = "weights",
) -> Path:
    """Path of the weight file of ``what`` (see the module docstring for the search order).

    Args:
        weights: explicit path, or ``None`` to look in the torch hub checkpoints folder.
        file_names: accepted file names there, first preferred.
        what: the metric and network, for messages (e.g. ``"LPIPS AlexNet backbone"``).
        source: where a user can obtain the file (a URL or an instruction), for messages.
        argument: the name of the option that takes an explicit path, for messages.
    """
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise FileNotFoundError(
                f"{what}: weight file {path} (given as {argument}=) does not exist; "
                f"pass the path of {file_names[0] if file_names else 'the file'} (obtain it from {source})"
            )
        return path
    folder = hub_checkpoints_dir()
    for name in file_names:
        if (folder / name).is_file():
            return folder / name
    raise FileNotFoundError(
        f"{what}: weight file {file_names[0]} not found in {folder} and no {argument}= path given. "
        f"Put {file_names[0]} there (set TORCH_HOME to move the folder) or pass {argument}=<path>. "
        f"Obtain it from {source}; nothing is downloaded at run time."
    )


def load_state_dict_file(path: str | os.PathLike, *, what: str) -> dict[str, torch.Tensor]:
    """Tensors of a ``.safetensors`` or torch file on the CPU, without unpickling code.

    A checkpoint that wraps its weights as ``{"state_dict": ...}`` or ``{"model": ...}`` is
    unwrapped; a ``"module."`` prefix (DDP) is removed.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device="cpu")
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch and safetensors raise several types
        raise ValueError(
            f"{what}: cannot load weights from {path}: {err}. It must be a state dict saved by torch.save "
            "(tensors only) or a .safetensors file"
        ) from err
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise ValueError(f"{what}: {path} does not hold a state dict (a mapping of names to tensors)")
    if state and all(k.startswith("module.") for k in state):
        state = {k[len("module."):]: v for k, v in state.items()}
    return state


def load_into(module: torch.nn.Module, state: dict[str, torch.Tensor], *, path: Path, what: str) -> None:
    """``module.load_state_dict(state, strict=True)`` with an error that names the file and the fix."""
    own = module.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    wrong = sorted(k for k in set(own) & set(state) if own[k].shape != state[k].shape)
    if missing or unexpected or wrong:
        raise ValueError(
            f"{what}: {path} does not match the network: {len(missing)} missing keys {missing[:3]}, "
            f"{len(unexpected)} unexpected keys {unexpected[:3]}, {len(wrong)} shape mismatches {wrong[:3]}. "
            "Check that the file is the one named in the metric's documentation"
        )
    module.load_state_dict(state, strict=True)


_FINGERPRINTS: dict[tuple[str, int, int], str] = {}


def file_sha256(path: str | os.PathLike) -> str:
    """Hex sha256 of a file's bytes, remembered per (path, size, mtime) within the process."""
    path = Path(path).resolve()
    st = path.stat()
    key = (str(path), st.st_size, st.st_mtime_ns)
    if key not in _FINGERPRINTS:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        _FINGERPRINTS[key] = h.hexdigest()
    return _FINGERPRINTS[key]


def module_device(module: torch.nn.Module) -> torch.device:
    """Device of a module's first parameter or buffer (CPU for a module with neither)."""
    for t in module.parameters():
        return t.device
    for t in module.buffers():
        return t.device
    return torch.device("cpu")


def to_rgb(x: torch.Tensor, *, what: str) -> torch.Tensor:
    """``(B, 3, H, W)`` from ``(B, 1 or 3, H, W)`` (grey images repeat their channel)."""
    if x.ndim != 4 or x.shape[1] not in (1, 3):
        raise ValueError(f"{what} needs images (B, 3, H, W) or (B, 1, H, W), got shape {tuple(x.shape)}")
    return x.expand(-1, 3, -1, -1) if x.shape[1] == 1 else x
