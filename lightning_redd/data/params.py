"""The files of a run's per-image operator parameters, matched to its images by name stem.

What is read is the operator's declaration (``operator.file_params()``, see
:mod:`lightning_redd.operators.file_params`): each :class:`FileParam` names its kind, the file
kinds it takes and its reader. This module only matches files to images
(``<folder>/<stem>.<ext>``: exactly one file per stem), calls the readers, collects every
problem of a run at once (before any compute) and stacks one batch's tensors for
:meth:`ForwardOperator.bind`.
"""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch

from lightning_redd.operators.file_params import FileParam, ParamFileError


class ParamFiles:
    """A run's parameter files.

    Args:
        declared: the operator's ``file_params()`` (``{name: FileParam}``).
        folders: ``{name: folder}`` of the parameters read from folders of their own.
    """

    def __init__(self, declared: Mapping[str, FileParam] | None = None, folders: Mapping[str, Path] | None = None) -> None:
        self.declared = dict(declared or {})
        self.folders = {k: Path(v) for k, v in (folders or {}).items()}

    def __bool__(self) -> bool:
        return bool(self.folders) or any(p.from_measurement for p in self.declared.values())

    def input_folders(self) -> list[Path]:
        return list(self.folders.values())

    def setting_problems(self) -> list[str]:
        """Folders for parameters the operator does not take, required ones missing, folders missing."""
        takes = sorted(n for n, p in self.declared.items() if not p.from_measurement)
        out = [f"data.param_folders.{n} is set, but the operator reads no {n} files"
               + (f" (it reads: {', '.join(takes)})" if takes else " (it reads none: remove the setting)")
               for n in self.folders if n not in takes]
        out += [f"the operator reads one {p.what} file per image: set data.param_folders.{n} to the folder of "
                f"<image stem>{p.extensions[0]} files" for n, p in self.declared.items()
                if p.required and not p.from_measurement and n not in self.folders]
        out += [f"{self.declared[n].what} folder {f} does not exist; set data.param_folders.{n} to the folder of "
                "<image stem> files" for n, f in self.folders.items() if n in self.declared and not f.is_dir()]
        return out

    def find(self, name: str, stem: str) -> Path:
        """The one file ``<folder>/<stem>.<ext>`` of parameter ``name``."""
        param, folder = self.declared[name], self.folders[name]
        hits = sorted(p for p in folder.glob(f"{glob_escape(stem)}.*") if p.suffix.lower() in param.extensions and p.stem == stem)
        if not hits:
            raise ParamFileError(f"no {param.what} for image {stem!r} in {folder}: add {stem}{param.extensions[0]} "
                                 "(same stem as the image)")
        if len(hits) > 1:
            raise ParamFileError(f"{', '.join(h.name for h in hits)} in {folder}: several {param.what} files for image "
                                 f"{stem!r}; keep one")
        return hits[0]

    def sources(self, stem: str, measurement: Path | None = None) -> dict[str, Path]:
        """``{name: file}`` of one image's parameters (measurement-borne ones from ``measurement``)."""
        out = {n: self.find(n, stem) for n in self.folders if n in self.declared}
        if measurement is not None:
            out.update({n: measurement for n, p in self.declared.items()
                        if p.from_measurement and measurement.suffix.lower() in p.extensions})
        return out

    def read(self, stem: str, size: tuple[int, int], fit=None, source: tuple[int, int] | None = None,
             measurement: Path | None = None) -> dict[str, torch.Tensor]:
        """One image's parameter tensors at image size ``size = (H, W)`` (``fit``/``source``:
        the image's crop and resize, for files of its source's size)."""
        out: dict[str, torch.Tensor] = {}
        for name, path in self.sources(stem, measurement).items():
            out.update(self.declared[name].read(path, size, fit, source))
        return out

    def notes(self, stems: Sequence[str], measurements: Mapping[str, Path] | None = None) -> list[str]:
        """Informative remarks on how files were read (e.g. 0/1 masks, EXIF rotations), one per kind."""
        found: dict[str, list[str]] = {}
        for stem in stems:
            try:
                sources = self.sources(stem, (measurements or {}).get(stem))
            except ParamFileError:
                continue
            for name, path in sources.items():
                for note in self.declared[name].note(path) if self.declared[name].note else []:
                    found.setdefault(note, []).append(path.name)
        return [f"{len(v)} file(s): {note}: {', '.join(v[:5])}{' ...' if len(v) > 5 else ''}" for note, v in found.items()]

    def problems(self, stems: Sequence[str], size: tuple[int, int] | Mapping[str, tuple[int, int]],
                 fits: Mapping[str, tuple] | None = None, measurements: Mapping[str, Path] | None = None) -> list[str]:
        """Every problem of every image's files (missing, several per stem, undecodable, wrong
        size, bad values), each naming the file and the fix; ``size``: the images' ``(H, W)``,
        or stem -> ``(H, W)`` for images of their own sizes; ``fits``: stem -> (fit, source)."""
        problems = self.setting_problems()
        if problems or not self:
            return problems

        def one(stem: str) -> list[str]:
            try:
                self.read(stem, size[stem] if isinstance(size, Mapping) else size, *(fits or {}).get(stem, (None, None)), measurement=(measurements or {}).get(stem))
            except ParamFileError as err:
                return [str(err)]
            return []

        with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # decoding releases the GIL
            return [p for found in pool.map(one, stems) for p in found]

    def stack(self, per_image: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
        """One batch's parameters, each kind stacked by its own rule (masks to a common channel
        count, kernels zero-padded to the largest)."""
        out: dict[str, torch.Tensor] = {}
        if not per_image or not per_image[0]:
            return out
        for param in self.declared.values():
            keys = [k for k in param.produces if k in per_image[0]]
            if keys:
                out.update(param.stack({k: [p[k] for p in per_image] for k in keys}))
        return out


def glob_escape(stem: str) -> str:
    """``stem`` with glob's special characters escaped."""
    return "".join(f"[{c}]" if c in "*?[]" else c for c in stem)
