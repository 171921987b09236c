"""A training corpus of photographs collected from installed packages (nothing is downloaded).

    python -m lightning_redd.data.corpus build DIR [--licences permissive|all]
    python -m lightning_redd.data.corpus sources        # what is installed, what to install

``build`` writes ``DIR/images/<source>__<stem>.png`` (RGB, longer side at most ``--max-side``) and
``DIR/manifest.csv`` (file, source, package, licence, licence class, original path, original size,
sha256 of the written file). It installs nothing: :data:`SOURCES` names the ``apt-get``/``pip`` package
each folder comes from, and a source that is not installed is skipped with a line saying so.

Which files count as photographs:

- **where**: each source lists the folders and file patterns that hold its images;
- **rule** (:func:`photo_rule`): the shorter side is at least ``MIN_SIDE`` pixels, and on a 128 px
  thumbnail (nearest-neighbour samples: no new colours) the image has at least ``MIN_GREY_LEVELS`` grey levels, its two most frequent colours cover
  less than ``MAX_TOP2_FRACTION`` of the pixels (logos, charts, masks, line art, flat fills fail), and
  it is not near-binary;
- **exclusions**: what the rule lets through but is not a photograph of the natural world (renders,
  paintings, cartoons, calibration-pattern and text shots, deliberately degraded copies, the second
  view of stereo pairs and near-duplicates) is named in each source's ``exclude``, with the reason.

Held-out photographs (the demo, tuning and test splits, :data:`~lightning_redd.data.photos.HELDOUT_PHOTOS`)
never enter the corpus: every candidate is compared *by content* with each held-out photo (and its
mirror image): a 32 x 32 grey thumbnail of the whole image, normalised, correlation above
``HELDOUT_CORRELATION`` with matching aspect ratio = the same photograph, whatever its name, format,
size or compression. (A crop of part of a held-out photo is not detected this way: no source here
holds one; the test splits are themselves crops of those photos.)

Licences: the shipped weights are trained on the ``permissive`` class only (public domain, CC0, BSD,
Apache); ``--licences all`` adds the GPL wallpapers, for a user's own training.

One file, over 300 lines: the source table with its per-file exclusions, the rule and the held-out
check are one decision (what enters the corpus), read and reviewed together.
"""
from __future__ import annotations

import argparse
import csv
import hashlib
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from lightning_redd.data.photos import HELDOUT_PHOTOS, _find, rgb_of, skimage_data_dir

MIN_SIDE = 192
MIN_GREY_LEVELS = 48
MAX_TOP2_FRACTION = 0.5
HELDOUT_CORRELATION = 0.95
MAX_ASPECT_DIFFERENCE = 0.05


def _matplotlib_sample_dir() -> Path | None:
    try:
        import matplotlib
    except ImportError:
        return None
    return Path(matplotlib.get_data_path()) / "sample_data"


def _skimage_dir() -> Path | None:
    try:
        return skimage_data_dir()
    except ImportError:
        return None


def _pixels(path: Path) -> int:
    try:
        with Image.open(path) as img:
            return img.size[0] * img.size[1]
    except OSError:
        return 0


def _fixed(path: str) -> Callable[[], Path | None]:
    return lambda: Path(path)


@dataclass(frozen=True)
class Source:
    """One package's photographs: where they are, under which licence, which files are not photos."""

    name: str
    package: str  # how to install it: "apt-get install X" or "pip install X"
    licence: str
    licence_class: str
    root: Callable[[], Path | None]
    patterns: tuple[str, ...]
    exclude: dict[str, str] = field(default_factory=dict)  # file stem -> reason
    largest_per_folder: bool = False  # one photo at several resolutions per folder: keep the largest file
    stem_of: Callable[[Path], str] = Path.stem.fget  # the photo's name (exclusions, written file name)

    def files(self) -> list[Path]:
        root = self.root()
        if root is None or not root.is_dir():
            return []
        # links (several names for one file) count once, under the file's own name
        found = sorted({p.resolve() for pattern in self.patterns for p in root.glob(pattern) if p.is_file()})
        if self.largest_per_folder:
            best: dict[Path, Path] = {}
            for p in found:
                if p.parent not in best or _pixels(p) > _pixels(best[p.parent]):
                    best[p.parent] = p
            found = sorted(best.values())
        return found


_STEREO = "second view of a stereo pair (the first is kept)"
_CALIB = "camera-calibration shot: a chessboard fills the frame"
SOURCES: tuple[Source, ...] = (
    Source(
        "skimage", "pip install scikit-image",
        "per image in skimage.data's docstrings (public domain, CC0 or free to use)", "permissive",
        _skimage_dir, ("*.png", "*.jpg"),
        {"logo": "logo", "text": "printed text", "page": "printed text", "horse": "silhouette",
         "phantom": "synthetic test pattern", "chessboard_GRAY": "synthetic pattern",
         "chessboard_RGB": "synthetic pattern", "color": "synthetic colour chart",
         "clock_motion": "deliberately motion-blurred copy", "microaneurysms": "medical image detail, not a photograph",
         "no_time_for_that_tiny": "animation frame"},
    ),
    Source(
        "matplotlib", "pip install matplotlib", "public domain (US Navy photograph)", "permissive",
        _matplotlib_sample_dir, ("grace_hopper.jpg",),
    ),
    Source(
        "opencv-doc", "apt-get install opencv-doc", "Apache-2.0 / BSD-3-Clause (Debian copyright of OpenCV's samples/data)",
        "permissive", _fixed("/usr/share/doc/opencv-doc/examples/data"), ("*.jpg", "*.png"),
        {"Blender_Suzanne1": "3D render", "Blender_Suzanne2": "3D render", "HappyFish": "cartoon",
         "LinuxLogo": "logo", "WindowsLogo": "logo", "aloeGT": "disparity map", "aloeR": _STEREO,
         "basketball2": "next frame of basketball1", "box": "crop of box_in_scene's object",
         "ela_modified": "edited copy of ela_original", "gradient": "synthetic gradient",
         "graf3": "second view of graf1", "imageTextN": "printed text", "imageTextR": "printed text",
         "leuvenB": "second view of leuvenA", "licenseplate_motion": "deliberately motion-blurred",
         "ml": "cartoon", "notes": "sheet music", "right": _STEREO, "rubberwhale2": "next frame of rubberwhale1",
         "smarties": "synthetic render", "starry_night": "a painting", "sudoku": "printed puzzle",
         "text_defocus": "printed text, deliberately blurred", "text_motion": "printed text, deliberately blurred",
         "digits": "handwritten digits", "cards": "drawing", "chessboard": "synthetic pattern",
         "detect_blob": "synthetic shapes", "ellipses": "synthetic shapes", "pca_test1": "synthetic shapes",
         **{f"left{i:02d}": _CALIB for i in range(1, 15)}, **{f"right{i:02d}": _CALIB for i in range(1, 15)},
         **{f"pic{i}": "synthetic shapes" for i in range(1, 7)}},
    ),
    Source(
        "libjxl-testdata", "apt-get install libjxl-testdata", "CC0 (Debian copyright: external/wesaturate)",
        "permissive", _fixed("/usr/share/libjxl-testdata/external/wesaturate/500px"), ("*_srgb8.png",),
    ),
    Source(
        "mate-backgrounds", "apt-get install mate-backgrounds", "GPL-2+", "copyleft",
        _fixed("/usr/share/backgrounds/mate/nature"), ("*.jpg", "*.png"),
    ),
    Source(
        "plasma-workspace-wallpapers", "apt-get install plasma-workspace-wallpapers", "GPL-2+ / LGPL-3 (per wallpaper)",
        "copyleft", _fixed("/usr/share/wallpapers"),
        tuple(f"{name}/contents/images/*" for name in
              ("BytheWater", "ColdRipple", "EveningGlow", "FallenLeaf", "Kite", "OneStandsOut", "Path", "summer_1am")),
        largest_per_folder=True, stem_of=lambda p: p.parts[-4],  # <name>/contents/images/<size>.jpg
    ),
)


def photo_rule(img: Image.Image) -> str | None:
    """``None`` when ``img`` passes the photograph rule, else the reason it fails (one line)."""
    w, h = img.size
    if min(w, h) < MIN_SIDE:
        return f"shorter side {min(w, h)} px < {MIN_SIDE}"
    scale = 128 / max(w, h)
    thumb = rgb_of(img).resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.NEAREST)
    rgb = np.asarray(thumb, dtype=np.uint8).reshape(-1, 3)
    grey = np.asarray(thumb.convert("L"), dtype=np.uint8).ravel()
    levels = len(np.unique(grey))
    if levels < MIN_GREY_LEVELS:
        return f"{levels} grey levels < {MIN_GREY_LEVELS} (line art, logo, chart)"
    _, counts = np.unique(rgb, axis=0, return_counts=True)
    top2 = np.sort(counts)[-2:].sum() / len(rgb)
    if top2 >= MAX_TOP2_FRACTION:
        return f"two colours cover {top2:.0%} of the image (flat fills, masks, line art)"
    return None


def signature(img: Image.Image) -> np.ndarray:
    """The content signature: a 32 x 32 grey thumbnail of the whole image, zero mean, unit norm."""
    grey = np.asarray(rgb_of(img).convert("L").resize((32, 32), Image.BILINEAR, reducing_gap=2.0), dtype=np.float64)
    grey = grey - grey.mean()
    return grey / max(np.linalg.norm(grey), 1e-9)


@dataclass(frozen=True)
class HeldOut:
    """A held-out photograph's signature (and its mirror's) and aspect ratio."""

    name: str
    signatures: tuple[np.ndarray, np.ndarray]
    aspect: float

    @classmethod
    def of(cls, name: str, img: Image.Image) -> "HeldOut":
        return cls(name, (signature(img), signature(img.transpose(Image.FLIP_LEFT_RIGHT))), img.size[0] / img.size[1])

    def matches(self, size: tuple[int, int], sig: np.ndarray) -> float | None:
        """The correlation when an image of ``size`` with signature ``sig`` is this photograph (any size,
        format, name), else ``None``."""
        if abs(size[0] / size[1] - self.aspect) > MAX_ASPECT_DIFFERENCE * self.aspect:
            return None
        corr = max(float((sig * ref).sum()) for ref in self.signatures)
        return corr if corr > HELDOUT_CORRELATION else None


def heldout_references(files: Iterable[str | Path] | None = None) -> list[HeldOut]:
    """Signatures of the held-out photographs (default: ``HELDOUT_PHOTOS`` from scikit-image's data)."""
    if files is None:
        root = skimage_data_dir()
        files = [_find(root, name) for name in HELDOUT_PHOTOS]
    refs = []
    for f in files:
        with Image.open(f) as img:
            refs.append(HeldOut.of(Path(f).stem, rgb_of(img)))
    return refs


@dataclass
class Decision:
    path: Path
    source: Source
    kept: bool
    reason: str  # "" when kept


def select(sources: Sequence[Source], heldout: Sequence[HeldOut], licences: str = "permissive") -> list[Decision]:
    """Every candidate file of ``sources`` with the decision taken on it (kept, or the reason not)."""
    if licences not in ("permissive", "all"):
        raise ValueError(f"licences must be 'permissive' or 'all', got {licences!r}")
    decisions = []
    for src in sources:
        for path in src.files():
            if licences == "permissive" and src.licence_class != "permissive":
                decisions.append(Decision(path, src, False, f"licence class {src.licence_class} (pass --licences all)"))
                continue
            if src.stem_of(path) in src.exclude:
                decisions.append(Decision(path, src, False, f"excluded: {src.exclude[src.stem_of(path)]}"))
                continue
            try:
                with Image.open(path) as img:
                    img.load()
                    rgb = rgb_of(img)
                reason = photo_rule(rgb)
                if reason is None:
                    sig = signature(rgb)
                    hits = [(h.name, c) for h in heldout if (c := h.matches(rgb.size, sig)) is not None]
                    if hits:
                        reason = f"held-out photograph {hits[0][0]} (correlation {hits[0][1]:.3f})"
            except OSError as err:
                reason = f"unreadable: {err}"
            decisions.append(Decision(path, src, reason is None, reason or ""))
    return decisions


MANIFEST_FIELDS = ("file", "source", "package", "licence", "licence_class", "original", "width", "height", "sha256")


def build(out_dir: str | Path, *, licences: str = "permissive", max_side: int = 1536,
          sources: Sequence[Source] = SOURCES, heldout: Sequence[HeldOut] | None = None,
          log: Callable[[str], None] = print) -> list[dict[str, str]]:
    """Write the corpus into ``out_dir`` (``images/`` and ``manifest.csv``); returns the manifest rows.

    ``out_dir/images`` must not hold files other than a previous build's (they are never deleted:
    a fresh folder, or the same one again, which is rewritten)."""
    out = Path(out_dir)
    images = out / "images"
    manifest = out / "manifest.csv"
    if images.is_dir() and any(images.iterdir()) and not manifest.is_file():
        raise FileExistsError(f"{images} holds files and no manifest.csv: not a corpus folder; choose an empty folder")
    heldout = heldout_references() if heldout is None else heldout
    decisions = select(sources, heldout, licences)
    for src in sources:
        root = src.root()
        if root is None or not root.is_dir():
            log(f"skipped {src.name}: not installed ({src.package})")
    images.mkdir(parents=True, exist_ok=True)
    rows = []
    for d in decisions:
        if not d.kept:
            log(f"  - {d.source.name}/{d.path.name}: {d.reason}")
            continue
        with Image.open(d.path) as img:  # read again: decisions keep no pixels (the GPL build is ~250 MB of them)
            img.load()
            rgb = rgb_of(img)
        w, h = rgb.size
        if max(w, h) > max_side:
            rgb = rgb.resize((round(w * max_side / max(w, h)), round(h * max_side / max(w, h))), Image.LANCZOS)
        name = f"{d.source.name}__{d.source.stem_of(d.path)}.png"
        tmp = images / (name + ".tmp")
        rgb.save(tmp, format="PNG")
        tmp.replace(images / name)
        rows.append({"file": f"images/{name}", "source": d.source.name, "package": d.source.package,
                     "licence": d.source.licence, "licence_class": d.source.licence_class, "original": str(d.path),
                     "width": str(w), "height": str(h),
                     "sha256": hashlib.sha256((images / name).read_bytes()).hexdigest()})
        log(f"  + {d.source.name}/{d.path.name} ({w}x{h})")
    tmp = manifest.with_suffix(".csv.tmp")
    with tmp.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=MANIFEST_FIELDS)
        writer.writeheader()
        writer.writerows(rows)
    tmp.replace(manifest)
    pixels = sum(int(r["width"]) * int(r["height"]) for r in rows)
    log(f"{len(rows)} photographs ({pixels / 1e6:.1f} Mpixel at source size) in {images}; manifest {manifest}")
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m lightning_redd.data.corpus", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="collect the installed packages' photographs into DIR")
    b.add_argument("out_dir")
    b.add_argument("--licences", choices=("permissive", "all"), default="permissive",
                   help="permissive (default, what the shipped weights use) or all (adds GPL wallpapers)")
    b.add_argument("--max-side", type=int, default=1536, help="longer side of the written images (default 1536)")
    sub.add_parser("sources", help="list the sources, their licences and whether they are installed")
    args = parser.parse_args(argv)
    if args.command == "sources":
        for src in SOURCES:
            n = len(src.files())
            state = f"{n} candidate files" if n else f"not installed: {src.package}"
            print(f"{src.name:30s} {src.licence_class:10s} {state}")
        return 0
    build(args.out_dir, licences=args.licences, max_side=args.max_side)
    return 0


if __name__ == "__main__":
    sys.exit(main())
