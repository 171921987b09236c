"""Training patches for the embedded prior: random-scale crops of a few photographs.

One file, over 300 lines: the training patches and the held-out exports share the photo lists
(training and held out), their loader and the crop rules.

By default the photos are the sample images that scikit-image ships inside its package
(``skimage/data/*.png|jpg``: read from disk, never downloaded). scikit-image is only needed
for this (``pip install 'lightning_redd[train]'``). A folder of your own images works too.

Patches are ``(3, S, S)`` float tensors in ``[-1, 1]``: a square region whose side is drawn
log-uniformly between ``S / max_upscale`` pixels and the photo's shorter side (so the prior
sees both fine texture and whole-object views), resized to ``S``, flipped left-right with
probability 1/2. Grayscale photos are replicated to RGB; RGBA is composited on white.

Whole photos are held out for validation and the demo images (``HELDOUT_PHOTOS``); they are
never trained on. ``python -m lightning_redd.data.photos export-demo data/demo`` writes the
deterministic demo PNGs (``export-large data/demo128``: at 128 px, with a non-square photo);
``... export-split DIR --split test|tuning`` writes more held-out
crops (:func:`export_split`: the demo images plus test crops, or disjoint tuning crops).
"""
from __future__ import annotations

import argparse
import math
from collections.abc import Sequence
from pathlib import Path

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, TensorDataset

#: Colour photographs used for training (file stems in ``skimage/data``).
TRAIN_COLOR = ("astronaut", "hubble_deep_field", "ihc", "retina", "rocket", "logo")
#: Grayscale photographs used for training (replicated to RGB).
TRAIN_GRAY = ("camera", "brick", "grass", "gravel", "coins", "moon", "page", "text", "cell", "clock_motion")
TRAIN_PHOTOS = TRAIN_COLOR + TRAIN_GRAY
#: Held out whole: validation and demo images. The motorcycle pair is a stereo pair, so both go.
HELDOUT_PHOTOS = ("chelsea", "coffee", "motorcycle_left", "motorcycle_right")
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp")
#: Demo images: (output name, photo, crop box (left, top, right, bottom) or None for the centre square).
DEMO_IMAGES = (
    ("chelsea.png", "chelsea", None),
    ("chelsea_face.png", "chelsea", (120, 20, 320, 220)),
    ("coffee.png", "coffee", None),
    ("motorcycle.png", "motorcycle_left", None),
)

#: Extra held-out crops (beyond the demo images) per split: photo -> number of crops. The
#: crops of one photo never overlap one another, whichever split they belong to.
SPLIT_CROPS = {
    "test": {"chelsea": 2, "coffee": 2, "motorcycle_left": 2},
    "tuning": {"motorcycle_right": 2, "chelsea": 1, "coffee": 1},
}
#: Crop sides (full-resolution pixels) are log-uniform in [CROP_MIN_SIDE, CROP_MAX_FRACTION * shorter side].
CROP_MIN_SIDE, CROP_MAX_FRACTION = 96, 0.45
#: A crop whose grey levels vary less than this (std in [0, 1] units) is flat wall or sky: redrawn.
CROP_MIN_STD = 0.06


def skimage_data_dir() -> Path:
    """The folder holding scikit-image's bundled sample images."""
    try:
        import skimage
    except ImportError as err:  # pragma: no cover - depends on the environment
        raise ImportError(
            "the default training photos come with scikit-image; install the extra: "
            "pip install 'lightning_redd[train]' (or pass folder=<your images>)"
        ) from err
    return Path(skimage.__file__).parent / "data"


def _find(folder: Path, stem: str) -> Path:
    for suffix in IMAGE_SUFFIXES:
        if (folder / (stem + suffix)).is_file():
            return folder / (stem + suffix)
    raise FileNotFoundError(f"no image named {stem!r} ({'|'.join(IMAGE_SUFFIXES)}) in {folder}")


def rgb_of(img: Image.Image) -> Image.Image:
    """An opened image as 8-bit RGB: gray replicated, alpha composited on white, 16-bit scaled to 8 bits
    (an RGB image is returned as it is)."""
    if img.mode == "RGB":
        return img
    if img.mode.startswith("I;16"):
        img = Image.fromarray((np.asarray(img, dtype=np.float64) / 257.0).round().astype(np.uint8))
    if img.mode in ("RGBA", "LA") or (img.mode == "P" and "transparency" in img.info):
        img = img.convert("RGBA")
        img = Image.alpha_composite(Image.new("RGBA", img.size, (255, 255, 255, 255)), img)
    return img.convert("RGB")


def load_rgb(path: str | Path) -> Image.Image:
    """An image file as 8-bit RGB (:func:`rgb_of`)."""
    with Image.open(path) as img:
        img.load()
        return rgb_of(img) if img.mode != "RGB" else img.copy()


def to_tensor(img: Image.Image) -> torch.Tensor:
    """``(3, H, W)`` uint8 tensor of an RGB image."""
    return torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).contiguous()


def pyramid(photo: torch.Tensor, size: int) -> list[torch.Tensor]:
    """Photo ``(3, H, W)`` uint8 and its successive halvings while the shorter side stays >= ``size``."""
    levels = [photo]
    while min(levels[-1].shape[-2:]) >= 2 * size:
        x = levels[-1][None].float()
        levels.append(F.avg_pool2d(x, 2).round().to(torch.uint8)[0])
    return levels


def random_patch(levels: Sequence[torch.Tensor], size: int, max_upscale: float, generator: torch.Generator | None = None) -> torch.Tensor:
    """One random-scale crop ``(3, size, size)`` in ``[-1, 1]`` from a photo pyramid.

    The crop side ``c`` (in full-resolution pixels) is log-uniform in ``[size / max_upscale, min(H, W)]``;
    the crop is taken at the coarsest pyramid level where it still spans >= ``size`` pixels,
    so the resize is cheap.
    """
    h, w = levels[0].shape[-2:]
    lo, hi = math.log(min(size / max_upscale, min(h, w))), math.log(min(h, w))
    c = math.exp(lo + (hi - lo) * float(torch.rand((), generator=generator)))
    k = max(0, min(len(levels) - 1, int(math.floor(math.log2(max(c / size, 1.0))))))
    src = levels[k]
    side = max(1, min(round(c / 2**k), *src.shape[-2:]))
    top = int(torch.randint(0, src.shape[-2] - side + 1, (), generator=generator))
    left = int(torch.randint(0, src.shape[-1] - side + 1, (), generator=generator))
    crop = src[:, top : top + side, left : left + side][None].float()
    crop = F.interpolate(crop, size=(size, size), mode="bilinear", antialias=side > size, align_corners=False)[0]
    if float(torch.rand((), generator=generator)) < 0.5:
        crop = crop.flip(-1)
    return (crop / 127.5 - 1.0).clamp(-1.0, 1.0)


def darkened(patch: torch.Tensor, factor: float) -> torch.Tensor:
    """``patch`` in ``[-1, 1]`` with its intensities in ``[0, 1]`` scaled by ``factor`` (a shorter exposure)."""
    return (patch + 1.0) * factor - 1.0


class RandomPatches(Dataset):
    """``length`` random patches per epoch; photo ``i`` drawn with probability proportional to ``weights[i]``.

    ``darken``: the share of patches darkened (:func:`darkened`) by a factor log-uniform in ``[darken_min, 1]``.
    """

    def __init__(self, photos: Sequence[torch.Tensor], weights: Sequence[float], *, size: int, max_upscale: float, length: int,
                 darken: float = 0.0, darken_min: float = 0.5) -> None:
        self.levels = [pyramid(p, size) for p in photos]
        self.weights = torch.tensor(list(weights), dtype=torch.float64)
        self.size, self.max_upscale, self.length = size, max_upscale, length
        self.darken, self.darken_min = darken, darken_min

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> torch.Tensor:
        i = int(torch.multinomial(self.weights, 1))
        patch = random_patch(self.levels[i], self.size, self.max_upscale)
        if self.darken and float(torch.rand(())) < self.darken:
            patch = darkened(patch, math.exp(math.log(self.darken_min) * float(torch.rand(()))))
        return patch


def fixed_patches(photos: Sequence[torch.Tensor], *, size: int, max_upscale: float, count: int, seed: int) -> torch.Tensor:
    """``count`` deterministic patches ``(count, 3, size, size)`` cycling through ``photos``."""
    g = torch.Generator().manual_seed(seed)
    levels = [pyramid(p, size) for p in photos]
    return torch.stack([random_patch(levels[i % len(levels)], size, max_upscale, g) for i in range(count)])


class PhotoPatches(L.LightningDataModule):
    """Random-scale ``image_size`` crops of photos, in ``[-1, 1]``; batches ``(B, 3, S, S)``.

    Args:
        image_size: patch side ``S``.
        batch_size: training batch size.
        num_workers: DataLoader worker processes (patches are cut with cheap tensor ops from
            photos held in memory; 4-8 workers keep a GPU busy).
        samples_per_epoch: patches per (virtual) training epoch; validation runs after each.
        max_upscale: the smallest crop side is ``image_size / max_upscale`` pixels (>= 1).
        gray_weight: sampling weight of a grayscale photo relative to a colour one.
        folder: train on the images of this folder instead of scikit-image's photos.
        replay: with ``folder``, the share of patches drawn from scikit-image's training photos
            (``TRAIN_PHOTOS``, the first shipped prior's set) instead of the folder's: fine-tuning
            that prior on a new folder keeps seeing what it was trained on (0: the folder alone).
        darken: the share of training patches darkened as by a shorter exposure: their intensities
            in ``[0, 1]`` multiplied by a factor log-uniform in ``[darken_min, 1]`` (0: none).
        darken_min: the smallest such factor, in ``(0, 1]``.
        val_names: file stems held out for validation; default: ``HELDOUT_PHOTOS`` for the
            scikit-image photos, the last 10% (sorted by name, at least 1) of a folder.
        val_samples: number of fixed validation patches.
        seed: seed of the validation patches.
    """

    def __init__(
        self,
        *,
        image_size: int = 64,
        batch_size: int = 128,
        num_workers: int = 4,
        samples_per_epoch: int = 64000,
        max_upscale: float = 1.25,
        gray_weight: float = 0.5,
        folder: str | None = None,
        replay: float = 0.0,
        darken: float = 0.0,
        darken_min: float = 0.5,
        val_names: list[str] | None = None,
        val_samples: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__()
        if image_size < 8 or batch_size < 1 or num_workers < 0 or samples_per_epoch < 1 or val_samples < 1:
            raise ValueError("need image_size >= 8, batch_size >= 1, num_workers >= 0, samples_per_epoch >= 1, val_samples >= 1")
        if max_upscale < 1.0 or gray_weight < 0.0:
            raise ValueError(f"need max_upscale >= 1 and gray_weight >= 0, got {max_upscale}, {gray_weight}")
        if not 0.0 <= replay < 1.0 or (replay > 0.0 and folder is None):
            raise ValueError(f"replay={replay}: need 0 <= replay < 1, and a folder to mix scikit-image's photos into")
        if not 0.0 <= darken <= 1.0 or not 0.0 < darken_min <= 1.0:
            raise ValueError(f"darken={darken}, darken_min={darken_min}: need 0 <= darken <= 1 and 0 < darken_min <= 1")
        self.save_hyperparameters()
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None

    def photo_names(self) -> tuple[list[Path], list[Path]]:
        """(training files, held-out files); disjoint by construction."""
        if self.hparams.folder is None:
            root = skimage_data_dir()
            held = list(self.hparams.val_names or HELDOUT_PHOTOS)
            train = [n for n in TRAIN_PHOTOS if n not in held]
            return [_find(root, n) for n in train], [_find(root, n) for n in held]
        root = Path(self.hparams.folder)
        files = sorted(p for p in root.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES) if root.is_dir() else []
        if len(files) < 2:
            raise FileNotFoundError(f"folder={root} needs at least 2 images ({', '.join(IMAGE_SUFFIXES)}): one to train, one to validate")
        if self.hparams.val_names:
            held = [p for p in files if p.stem in set(self.hparams.val_names)]
        else:
            held = files[-max(1, round(0.1 * len(files))):]
        return [p for p in files if p not in held], held

    def replay_names(self) -> list[Path]:
        """scikit-image's training photos mixed in by ``replay`` (none when it is 0)."""
        if not self.hparams.replay:
            return []
        root = skimage_data_dir()
        return [_find(root, n) for n in TRAIN_PHOTOS]

    def describe(self) -> str:
        """One line naming the training photos (goes into the exported checkpoint's metadata)."""
        train, held = self.photo_names()
        source = "scikit-image sample photos" if self.hparams.folder is None else f"folder {self.hparams.folder}"
        if self.hparams.replay:
            source += f" + {self.hparams.replay:g} of patches from scikit-image {[p.stem for p in self.replay_names()]}"
        darken = f", {self.hparams.darken:g} darkened x[{self.hparams.darken_min:g}, 1]" if self.hparams.darken else ""
        return (f"{source}: train {[p.stem for p in train]}, held out {[p.stem for p in held]}; "
                f"random-scale {self.hparams.image_size}px crops, hflip{darken}, [-1, 1]")

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        hp = self.hparams
        train, held = self.photo_names()
        photos, weights = self._weighted(train)
        if hp.replay:
            more, more_weights = self._weighted(self.replay_names())
            photos += more
            own, other = (1.0 - hp.replay) / sum(weights), hp.replay / sum(more_weights)
            weights = [w * own for w in weights] + [w * other for w in more_weights]
        self.train_set = RandomPatches(photos, weights, size=hp.image_size, max_upscale=hp.max_upscale, length=hp.samples_per_epoch,
                                       darken=hp.darken, darken_min=hp.darken_min)
        val = fixed_patches([to_tensor(load_rgb(p)) for p in held], size=hp.image_size, max_upscale=hp.max_upscale,
                            count=hp.val_samples, seed=hp.seed)
        self.val_set = TensorDataset(val)

    def _weighted(self, files: Sequence[Path]) -> tuple[list[torch.Tensor], list[float]]:
        """The photos of ``files`` as tensors, and their sampling weights (``gray_weight`` for a gray one)."""
        photos = [to_tensor(load_rgb(p)) for p in files]
        gray = [bool((t[0] == t[1]).all() and (t[1] == t[2]).all()) for t in photos]
        return photos, [self.hparams.gray_weight if g else 1.0 for g in gray]

    def _loader(self, dataset: Dataset, shuffle: bool) -> DataLoader:
        workers = self.hparams.num_workers
        return DataLoader(dataset, batch_size=self.hparams.batch_size, shuffle=shuffle, num_workers=workers,
                          persistent_workers=workers > 0, pin_memory=torch.cuda.is_available(), drop_last=shuffle)

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=False)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)


def export_demo(out_dir: str | Path, size: int = 64) -> list[Path]:
    """Write the deterministic demo PNGs (``DEMO_IMAGES``) of held-out photos into ``out_dir``."""
    root, out_dir = skimage_data_dir(), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, stem, box in DEMO_IMAGES:
        if stem not in HELDOUT_PHOTOS:
            raise AssertionError(f"demo image {name} must come from a held-out photo, not {stem}")
        img = load_rgb(_find(root, stem))
        if box is None:
            w, h = img.size
            s = min(w, h)
            box = ((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)
        img.crop(box).resize((size, size), Image.Resampling.LANCZOS).save(out_dir / name)
        written.append(out_dir / name)
    return written


def export_large(out_dir: str | Path, size: int = 128) -> list[Path]:
    """The example of restoring at a larger size (``data/demo128``): the demo images at ``size``
    px (:func:`export_demo`) and the whole held-out ``motorcycle_left`` photo at ``3 size / 2 x
    size`` (non-square, width x height), all from held-out photos."""
    out_dir = Path(out_dir)
    written = export_demo(out_dir, size)
    wide = load_rgb(_find(skimage_data_dir(), "motorcycle_left")).resize((3 * size // 2, size), Image.Resampling.LANCZOS)
    wide.save(out_dir / "motorcycle_wide.png")
    return written + [out_dir / "motorcycle_wide.png"]


def _overlaps(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


def _draw_crop(img: Image.Image, taken: list, size: int, g: torch.Generator) -> tuple[int, int, int, int]:
    """A square box of ``img`` overlapping none of ``taken`` and textured enough (:data:`CROP_MIN_STD`)."""
    w, h = img.size
    lo, hi = math.log(CROP_MIN_SIDE), math.log(max(CROP_MIN_SIDE, CROP_MAX_FRACTION * min(w, h)))
    for _ in range(2000):
        side = round(math.exp(lo + (hi - lo) * float(torch.rand((), generator=g))))
        left = int(torch.randint(0, w - side + 1, (), generator=g))
        top = int(torch.randint(0, h - side + 1, (), generator=g))
        box = (left, top, left + side, top + side)
        if any(_overlaps(box, t) for t in taken):
            continue
        gray = np.asarray(img.crop(box).resize((size, size), Image.Resampling.LANCZOS).convert("L"), dtype=np.float64) / 255
        if gray.std() >= CROP_MIN_STD:
            return box
    raise RuntimeError(f"could not place another non-overlapping textured crop in a {w}x{h} photo; lower SPLIT_CROPS")


def held_out_crops(size: int = 64, seed: int = 0) -> list[tuple[str, str, str, tuple[int, int, int, int]]]:
    """The crops of :data:`SPLIT_CROPS`: ``(split, file name, photo, box)``, deterministic in ``seed``.

    Per photo, one generator (from ``seed`` and the photo's position in :data:`HELDOUT_PHOTOS`)
    places the test crops first, then the tuning crops, each avoiding all earlier ones, so the
    tuning and test crops of a photo share no pixel. (The demo images are whole-photo views at
    a coarser scale and do overlap them.)
    """
    root, out = skimage_data_dir(), []
    for p, stem in enumerate(HELDOUT_PHOTOS):
        img, taken = load_rgb(_find(root, stem)), []
        g = torch.Generator().manual_seed(seed * 1000 + p)
        for split, counts in SPLIT_CROPS.items():
            for i in range(counts.get(stem, 0)):
                taken.append(_draw_crop(img, taken, size, g))
                out.append((split, f"{stem}_{split}{i:02d}.png", stem, taken[-1]))
    return out


def export_split(out_dir: str | Path, split: str, size: int = 64, seed: int = 0) -> list[Path]:
    """Write a held-out split as ``size`` PNGs into ``out_dir``: ``test`` = the demo images
    (:func:`export_demo`, byte-identical to ``data/demo``) plus the test crops of
    :func:`held_out_crops`; ``tuning`` = the tuning crops only (disjoint from the test crops)."""
    if split not in SPLIT_CROPS:
        raise ValueError(f"unknown split {split!r}; allowed: {tuple(SPLIT_CROPS)}")
    out_dir = Path(out_dir)
    written = export_demo(out_dir, size) if split == "test" else []
    out_dir.mkdir(parents=True, exist_ok=True)
    root = skimage_data_dir()
    for s, name, stem, box in held_out_crops(size, seed):
        if s == split:
            load_rgb(_find(root, stem)).crop(box).resize((size, size), Image.Resampling.LANCZOS).save(out_dir / name)
            written.append(out_dir / name)
    return written


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m lightning_redd.data.photos")
    sub = parser.add_subparsers(dest="command", required=True)
    demo = sub.add_parser("export-demo", help="write the held-out demo PNGs")
    demo.add_argument("out_dir")
    demo.add_argument("--size", type=int, default=64)
    large = sub.add_parser("export-large", help="write the larger held-out example (data/demo128): demo images + a wide photo")
    large.add_argument("out_dir")
    large.add_argument("--size", type=int, default=128)
    split = sub.add_parser("export-split", help="write a held-out split: test (demo images + crops) or tuning (crops)")
    split.add_argument("out_dir")
    split.add_argument("--split", choices=tuple(SPLIT_CROPS), required=True)
    split.add_argument("--size", type=int, default=64)
    split.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    if args.command == "export-demo":
        paths = export_demo(args.out_dir, args.size)
    elif args.command == "export-large":
        paths = export_large(args.out_dir, args.size)
    else:
        paths = export_split(args.out_dir, args.split, args.size, args.seed)
    for path in paths:
        print(path)


if __name__ == "__main__":
    main()
