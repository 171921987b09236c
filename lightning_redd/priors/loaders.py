"""Checkpoint loading: safe formats only, memory-mapped, with errors that name the fix.

Supported files:

* ``.pt`` / ``.pth`` / ``.bin`` / ``.ckpt``: ``torch.save`` archives read with
  ``torch.load(weights_only=True, mmap=True)`` (legacy non-zip files without ``mmap``).
  A pickle that would import or call anything beyond tensors and containers is refused
  (:class:`UnsafeCheckpointError`); nothing in it runs.
* ``.safetensors``: read with ``safetensors.torch.load_file`` (memory-mapped).

Common wrappers are unwrapped: a dict holding the weights under ``state_dict``, ``model``,
``ema``, ``model_ema``, ``ema_model``, ``module`` or ``net``, and key prefixes shared by
every key (``module.`` from DataParallel/DDP, ``_orig_mod.`` from ``torch.compile``).

:func:`load_into` builds nothing itself: pass it a module created on the meta device and it
assigns the checkpoint's (memory-mapped) tensors as the parameters, so a 2.2 GB checkpoint
never needs twice its size in RAM.
"""
from __future__ import annotations

import os
import pickle
from collections.abc import Mapping
from pathlib import Path

import torch
from torch import nn

TORCH_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt")
SAFETENSORS_SUFFIXES = (".safetensors",)
WRAPPER_KEYS = ("ema", "model_ema", "ema_model", "state_dict", "model", "module", "net")
SHARED_PREFIXES = ("module.", "_orig_mod.")


class CheckpointError(ValueError):
    """A checkpoint file that cannot be used; the message names the file, the problem and the fix."""


class UnsafeCheckpointError(CheckpointError, pickle.UnpicklingError):
    """The file's pickle would import or run code; it was not loaded."""


class CheckpointMismatchError(CheckpointError):
    """The checkpoint's keys or shapes do not fit the network built from the config."""


class CheckpointFileNotFound(CheckpointError, FileNotFoundError):
    """No file at the given checkpoint path."""


def resolve_path(path: str | os.PathLike, how_to_set: str = "") -> Path:
    """``path`` as an existing file, else :class:`FileNotFoundError` naming it and ``how_to_set``."""
    p = Path(path).expanduser()
    if not p.is_file():
        hint = f"; {how_to_set}" if how_to_set else ""
        raise CheckpointFileNotFound(f"checkpoint file not found: {str(p)!r}{hint}")
    if p.stat().st_size == 0:
        raise CheckpointError(f"checkpoint file {str(p)!r} is empty (0 bytes): an interrupted download or copy? "
                              "Fetch or copy it again")
    return p


def _torch_load(path: Path) -> object:
    """``torch.load`` with ``weights_only=True``; memory-mapped when the file's format allows."""
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=True)
        except RuntimeError as err:
            if "mmap" not in str(err) and "zip" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy (non-zip) format
    except UnsafeCheckpointError:
        raise
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(
            f"refused to load {str(path)!r}: its pickle references objects other than tensors and "
            "plain containers, which could run code when unpickled (torch.load(weights_only=True) "
            f"rejected it). Only load checkpoints from sources you trust; convert trusted ones to "
            f"a plain state dict or .safetensors. torch.load said: {_reason(err)}"
        ) from None
    except (RuntimeError, EOFError, KeyError, OSError, ValueError) as err:
        raise CheckpointError(
            f"cannot read checkpoint {str(path)!r}: it is not a complete torch.save archive (truncated, corrupt, or "
            f"another format) ({_reason(err) if len(str(err)) > 12 else f'{type(err).__name__}: {err}'}); fetch or copy the file again"
        ) from None


def _reason(err: Exception) -> str:
    """The informative line of a weights-only unpickling error (e.g. the unsupported global)."""
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip()]
    useful = [ln for ln in lines if ln.startswith(("Unsupported", "Trying to", "Weights only load failed because"))]
    return (useful or lines or ["(no details)"])[0]


def _is_tensor_dict(obj: object) -> bool:
    return isinstance(obj, Mapping) and len(obj) > 0 and all(
        isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()
    )


_SAVE_HINT = "save the network's weights with torch.save(model.state_dict(), path)"


def unwrap_state_dict(obj: object) -> dict[str, torch.Tensor]:
    """The ``{name: tensor}`` dict inside ``obj``: unwrap wrapper dicts and shared prefixes."""
    where = []  # the wrapper keys walked, for messages
    for _ in range(4):  # nested wrappers, e.g. {"ema": {"state_dict": ...}}
        if _is_tensor_dict(obj):
            break
        if isinstance(obj, Mapping):
            key = next((k for k in WRAPPER_KEYS if isinstance(obj.get(k), Mapping)), None)
            if key is not None:
                obj, where = obj[key], [*where, key]
                continue
        break
    inside = f" under {'/'.join(map(repr, where))}" if where else ""
    if not isinstance(obj, Mapping):
        raise CheckpointMismatchError(f"holds a {type(obj).__name__}{inside}, not a state dict (a dict of tensors); {_SAVE_HINT}")
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        keys = list(obj)[:10]
        raise CheckpointMismatchError(
            f"holds no tensors{inside} (keys there: {keys}); {_SAVE_HINT}, or a dict holding them under one of {WRAPPER_KEYS}"
        )
    for prefix in SHARED_PREFIXES:
        if all(k.startswith(prefix) for k in sd):
            sd = {k[len(prefix):]: v for k, v in sd.items()}
    return sd


def load_state_dict_file(path: str | os.PathLike, how_to_set: str = "") -> dict[str, torch.Tensor]:
    """Read a checkpoint file into a CPU ``{name: tensor}`` dict (memory-mapped where possible).

    Raises:
        FileNotFoundError: no file at ``path`` (the message adds ``how_to_set``).
        UnsafeCheckpointError: a pickle that would run code.
        ValueError: an unknown suffix.
    """
    p = resolve_path(path, how_to_set)
    suffix = p.suffix.lower()
    if suffix in SAFETENSORS_SUFFIXES:
        from safetensors.torch import load_file

        try:
            sd = load_file(str(p), device="cpu")
        except Exception as err:  # safetensors raises its own error type for broken files
            raise CheckpointError(f"cannot read safetensors checkpoint {str(p)!r}: {err} (truncated or corrupt); "
                                  "fetch or copy the file again") from None
        return _unwrap(sd, p)
    if suffix in TORCH_SUFFIXES:
        return _unwrap(_torch_load(p), p)
    raise CheckpointError(
        f"unsupported checkpoint format {suffix!r} for {str(p)!r}; "
        f"allowed: {TORCH_SUFFIXES + SAFETENSORS_SUFFIXES}"
    )


def _unwrap(obj: object, path: Path) -> dict[str, torch.Tensor]:
    """:func:`unwrap_state_dict`, with the file named in its errors."""
    try:
        return unwrap_state_dict(obj)
    except CheckpointMismatchError as err:
        raise CheckpointMismatchError(f"checkpoint {str(path)!r} {err}") from None


def mismatch_report(module: nn.Module, sd: Mapping[str, torch.Tensor], max_items: int = 8) -> str:
    """A readable list of missing / unexpected keys and shape mismatches ('' if all fit)."""
    expected = module.state_dict()
    missing = [k for k in expected if k not in sd]
    unexpected = [k for k in sd if k not in expected]
    shapes = [
        f"{k}: checkpoint {tuple(sd[k].shape)} vs network {tuple(v.shape)}"
        for k, v in expected.items()
        if k in sd and tuple(sd[k].shape) != tuple(v.shape)
    ]
    lines = []
    for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            more = f" (+{len(items) - max_items} more)" if len(items) > max_items else ""
            lines.append(f"  {len(items)} {title}: {items[:max_items]}{more}")
    return "\n".join(lines)


def load_into(module: nn.Module, sd: Mapping[str, torch.Tensor], *, source: str = "checkpoint", fix_hint: str = "") -> nn.Module:
    """Load ``sd`` into ``module`` (typically built on the meta device) by assignment.

    Floating tensors that are not float32 (e.g. a half-precision export) are converted to
    float32; precision at run time is chosen by autocast, not by the stored weights.

    Raises:
        CheckpointMismatchError: keys or shapes do not fit; lists them and ``fix_hint``.
    """
    report = mismatch_report(module, sd)
    if report:
        hint = fix_hint or "check that the network's config matches the one the checkpoint was trained with"
        raise CheckpointMismatchError(f"{source} does not fit the {type(module).__name__} built from the config:\n{report}\nLikely fix: {hint}")
    sd = {k: (v.float() if v.is_floating_point() and v.dtype != torch.float32 else v) for k, v in sd.items()}
    module.load_state_dict(sd, strict=True, assign=True)
    return module
