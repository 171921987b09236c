"""The configs and sample data that ship with the package, found from any working directory.

The repository's ``configs/`` and ``data/`` are installed inside the package as
``lightning_redd.bundled.configs`` and ``lightning_redd.bundled.data`` (see pyproject.toml). In
an editable install or a source checkout they are read from the checkout itself.

Two short forms use them:

* ``--config NAME`` where ``NAME`` is not an existing file: the bundled ``configs/NAME.yaml``
  (``demo``, ``task/sr_block``, ``solver/ddrm``, ``prior/embedded``, ...);
* ``data.root: package:NAME`` (and masks' ``package:NAME``): the bundled ``data/NAME`` folder
  (``package:demo``, the held-out photographs; ``package:masks``, their stroke masks).
"""
from __future__ import annotations

import os
from pathlib import Path

PACKAGE_PREFIX = "package:"
KINDS = ("configs", "data")


def bundled_dir(kind: str) -> Path:
    """The folder of the bundled ``configs`` or ``data``."""
    if kind not in KINDS:
        raise ValueError(f"unknown bundled folder {kind!r}; allowed: {KINDS}")
    installed = Path(__file__).resolve().parent / "bundled" / kind  # a wheel install
    if installed.is_dir():
        return installed
    checkout = Path(__file__).resolve().parents[1] / kind  # an editable install or a source checkout
    if checkout.is_dir():
        return checkout
    raise FileNotFoundError(f"the bundled {kind}/ folder is missing from this installation ({checkout}); reinstall lightning_redd")


def config_names() -> list[str]:
    """Every bundled config as ``--config`` takes it in short form (``task/sr_block``)."""
    root = bundled_dir("configs")
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def resolve_config(value: str) -> str:
    """``value`` itself when it is an existing file, else the bundled config it names
    (``demo``, ``configs/demo.yaml``, ``task/sr_block``); unchanged when nothing matches."""
    if Path(value).expanduser().is_file():
        return value
    name = value[len("configs/"):] if value.startswith("configs/") else value
    name = name[: -len(".yaml")] if name.endswith(".yaml") else name
    candidate = bundled_dir("configs") / f"{name}.yaml"
    return str(candidate) if candidate.is_file() else value


def resolve_data(value: str | os.PathLike) -> Path:
    """A data path: ``package:NAME`` is the bundled ``data/NAME``; anything else is a plain path."""
    text = str(value)
    if text.startswith(PACKAGE_PREFIX):
        name = text[len(PACKAGE_PREFIX):].strip("/")
        path = bundled_dir("data") / name
        if not path.exists():
            available = sorted(p.name for p in bundled_dir("data").iterdir() if p.is_dir())
            raise FileNotFoundError(f"no bundled data folder {name!r} ({text}); available: {', '.join(PACKAGE_PREFIX + a for a in available)}")
        return path
    return Path(text).expanduser()
