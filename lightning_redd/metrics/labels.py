"""Class labels of images, by name stem, for the top-k accuracy metric.

Label files (``load_labels``):

- ``.json``: ``{"<name>": <class index>, ...}``;
- ``.csv`` / ``.txt``: one ``<name>,<label>`` row per image; a header row is skipped. The
  label is a class index, or (with ``synset_mapping``) a WordNet synset such as ``n01440764``
  whose first whitespace-separated token is looked up (so ImageNet's ``LOC_val_solution.csv``,
  ``ImageId,PredictionString``, works as it is).

Names are image names with or without their extension (``ILSVRC2012_val_00000001.JPEG`` and
``ILSVRC2012_val_00000001`` are the same key).

Synset mappings (``load_synset_mapping``): a ``.txt`` file with one synset per line, the
index being the line number (ImageNet's ``LOC_synset_mapping.txt``), or a ``.json`` file,
``{"n01440764": 0, ...}`` or torchvision/Keras' ``imagenet_class_index.json``
(``{"0": ["n01440764", "tench"], ...}``).
"""
from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from lightning_redd.data.images import IMAGE_EXTENSIONS


def name_key(name: str) -> str:
    """An image name without its image extension."""
    p = Path(name)
    return p.stem if p.suffix.lower() in IMAGE_EXTENSIONS else p.name


def load_synset_mapping(path: str | os.PathLike) -> dict[str, int]:
    """``{synset: class index}`` from a ``.txt`` or ``.json`` mapping file (see the module docstring)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"synset mapping file {path} does not exist; pass LOC_synset_mapping.txt or imagenet_class_index.json")
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if all(isinstance(v, list) and v for v in data.values()):  # {"0": ["n01440764", "tench"]}
            return {v[0]: int(k) for k, v in data.items()}
        return {str(k): int(v) for k, v in data.items()}
    lines = [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]
    return {s: i for i, s in enumerate(lines)}


def _label(value: str, synsets: dict[str, int] | None, where: str) -> int:
    value = value.strip()
    if value.lstrip("-").isdigit():
        return int(value)
    token = value.split()[0] if value else value
    if synsets is not None and token in synsets:
        return synsets[token]
    hint = "pass synset_mapping= to read synset labels" if synsets is None else "the synset is not in the mapping file"
    raise ValueError(f"{where}: label {value!r} is not a class index; {hint}")


def load_labels(path: str | os.PathLike, *, synset_mapping: str | os.PathLike | None = None) -> dict[str, int]:
    """``{name stem: class index}`` from a ``.json`` or ``.csv``/``.txt`` label file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"label file {path} does not exist; pass a .json {{name: index}} or .csv name,label file")
    synsets = load_synset_mapping(synset_mapping) if synset_mapping is not None else None
    if path.suffix.lower() == ".json":
        data = json.loads(path.read_text())
        if not isinstance(data, dict):
            raise ValueError(f"{path}: a JSON label file must be an object {{name: class index}}")
        return {name_key(k): _label(str(v), synsets, str(path)) for k, v in data.items()}
    labels: dict[str, int] = {}
    with open(path, newline="") as fh:
        for i, row in enumerate(csv.reader(fh)):
            if not row or not row[0].strip():
                continue
            if len(row) < 2:
                raise ValueError(f"{path} line {i + 1}: expected name,label, got {row!r}")
            if i == 0 and not row[1].strip().lstrip("-").isdigit() and (synsets is None or row[1].split()[0] not in synsets):
                continue  # header
            labels[name_key(row[0].strip())] = _label(row[1], synsets, f"{path} line {i + 1}")
    if not labels:
        raise ValueError(f"no labels in {path}")
    return labels


def labels_from_synset_folders(root: str | os.PathLike, synset_mapping: str | os.PathLike) -> dict[str, int]:
    """``{name stem: class index}`` for images in ``root/<synset>/``, indices from the mapping file."""
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root} does not exist; pass a folder of <synset>/ sub-folders of images")
    synsets = load_synset_mapping(synset_mapping)
    labels: dict[str, int] = {}
    for sub in sorted(p for p in root.iterdir() if p.is_dir()):
        if sub.name not in synsets:
            raise ValueError(f"folder {sub} is not a synset of {synset_mapping}; remove it or fix the mapping")
        for f in sorted(sub.iterdir()):
            if f.is_file() and f.suffix.lower() in IMAGE_EXTENSIONS:
                if f.stem in labels:
                    raise ValueError(f"image name {f.stem} appears in two synset folders of {root}; names must be unique")
                labels[f.stem] = synsets[sub.name]
    if not labels:
        raise ValueError(f"no images in synset folders under {root}")
    return labels
