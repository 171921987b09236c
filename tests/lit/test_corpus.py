"""The training corpus: held-out photographs excluded by content, the photograph rule, the manifest."""
import csv
import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

corpus = pytest.importorskip("lightning_redd.data.corpus")
pytest.importorskip("skimage")
from lightning_redd.data.photos import HELDOUT_PHOTOS, _find, skimage_data_dir  # noqa: E402


def folder_source(root: Path, **kw) -> "corpus.Source":
    return corpus.Source("mine", "pip install nothing", "CC0", "permissive", lambda: root, ("*.png", "*.jpg"), **kw)


def reencode(src: Path, dst: Path, *, scale: float = 1.0, mirror: bool = False, quality: int = 80) -> Path:
    img = Image.open(src).convert("RGB")
    if scale != 1.0:
        img = img.resize((round(img.size[0] * scale), round(img.size[1] * scale)), Image.BICUBIC)
    if mirror:
        img = img.transpose(Image.FLIP_LEFT_RIGHT)
    img.save(dst, format="JPEG", quality=quality)
    return dst


@pytest.fixture(scope="module")
def heldout():
    return corpus.heldout_references()


def test_heldout_photo_renamed_and_reencoded_is_excluded(tmp_path, heldout):
    data = skimage_data_dir()
    reencode(_find(data, "chelsea"), tmp_path / "holiday_0042.jpg", scale=0.7, quality=70)
    reencode(_find(data, "coffee"), tmp_path / "mug.jpg", mirror=True, quality=90)
    reencode(_find(data, "astronaut"), tmp_path / "space.jpg", scale=0.8)
    reencode(_find(data, "rocket"), tmp_path / "launch.jpg")
    decisions = {d.path.name: d for d in corpus.select([folder_source(tmp_path)], heldout)}
    assert not decisions["holiday_0042.jpg"].kept
    assert decisions["holiday_0042.jpg"].reason.startswith("held-out photograph chelsea")
    assert not decisions["mug.jpg"].kept and "held-out photograph coffee" in decisions["mug.jpg"].reason
    assert decisions["space.jpg"].kept and decisions["launch.jpg"].kept
    out = tmp_path / "corpus"
    rows = corpus.build(out, sources=[folder_source(tmp_path)], heldout=heldout, log=lambda s: None)
    assert sorted(r["file"] for r in rows) == ["images/mine__launch.png", "images/mine__space.png"]
    assert sorted(p.name for p in (out / "images").iterdir()) == ["mine__launch.png", "mine__space.png"]


def test_no_training_photo_is_mistaken_for_a_heldout_one(heldout):
    src = corpus.SOURCES[0]
    assert src.name == "skimage"
    decisions = corpus.select([src], heldout)
    flagged = {d.path.stem for d in decisions if d.reason.startswith("held-out")}
    assert flagged == set(HELDOUT_PHOTOS)
    # the other photos score well below the threshold against every held-out one
    for d in decisions:
        if d.path.stem not in HELDOUT_PHOTOS and d.kept:
            with Image.open(d.path) as img:
                s = corpus.signature(img)
            best = max(float((s * ref).sum()) for h in heldout for ref in h.signatures)
            assert best < corpus.HELDOUT_CORRELATION - 0.1, (d.path.stem, best)


def test_photo_rule():
    rng = np.random.default_rng(0)
    photo = Image.fromarray(rng.integers(0, 256, (256, 300, 3), dtype=np.uint8))
    assert corpus.photo_rule(photo) is None
    assert "shorter side" in corpus.photo_rule(photo.resize((300, 150)))
    logo = np.full((256, 256, 3), 255, np.uint8)
    logo[64:192, 64:192] = (200, 30, 30)
    logo[100:120] = np.linspace(0, 255, 256, dtype=np.uint8)[None, :, None]  # a gradient bar: many levels
    assert "two colours cover" in corpus.photo_rule(Image.fromarray(logo))
    lineart = np.where(rng.random((256, 256)) < 0.5, 0, 255).astype(np.uint8)
    assert "grey levels" in corpus.photo_rule(Image.fromarray(lineart))


def test_build_manifest_licences_and_refusals(tmp_path, heldout):
    data = skimage_data_dir()
    src_dir = tmp_path / "src"
    (src_dir / "a").mkdir(parents=True)
    (src_dir / "b").mkdir()
    reencode(_find(data, "astronaut"), src_dir / "a" / "small.jpg", scale=0.5)
    reencode(_find(data, "astronaut"), src_dir / "a" / "large.jpg")
    reencode(_find(data, "rocket"), src_dir / "b" / "rocket.jpg")
    Image.open(_find(data, "brick")).save(src_dir / "b" / "brick.png")
    (src_dir / "a" / "zz_alias.jpg").symlink_to(src_dir / "a" / "large.jpg")  # one file, two names: counted once
    mine = corpus.Source("mine", "apt-get install mine", "BSD-3-Clause", "permissive", lambda: src_dir,
                         ("*/*.jpg", "*/*.png"), exclude={"brick": "a test exclusion"}, largest_per_folder=False)
    theirs = corpus.Source("gpl", "apt-get install gpl", "GPL-2+", "copyleft", lambda: src_dir,
                           ("b/*.jpg",), largest_per_folder=True)
    missing = corpus.Source("gone", "apt-get install gone", "CC0", "permissive", lambda: tmp_path / "absent", ("*",))
    lines = []
    rows = corpus.build(tmp_path / "out", sources=[mine, theirs, missing], heldout=heldout, log=lines.append)
    assert [r["file"] for r in rows] == ["images/mine__large.png", "images/mine__small.png", "images/mine__rocket.png"]
    assert any("brick.png: excluded: a test exclusion" in s for s in lines)
    assert any("licence class copyleft" in s for s in lines)
    assert any(s.startswith("skipped gone: not installed (apt-get install gone)") for s in lines)
    with (tmp_path / "out" / "manifest.csv").open() as fh:
        manifest = list(csv.DictReader(fh))
    assert manifest == rows
    for row in manifest:
        written = tmp_path / "out" / row["file"]
        assert hashlib.sha256(written.read_bytes()).hexdigest() == row["sha256"]
        assert row["licence"] == "BSD-3-Clause" and row["package"] == "apt-get install mine"
    assert (manifest[0]["width"], manifest[0]["height"]) == ("512", "512")
    # copyleft sources with --licences all; one file per folder where a source says so
    rows = corpus.build(tmp_path / "all", sources=[theirs], heldout=heldout, licences="all", log=lambda s: None)
    assert [r["licence_class"] for r in rows] == ["copyleft"]
    largest = corpus.Source("l", "x", "CC0", "permissive", lambda: src_dir, ("a/*.jpg",), largest_per_folder=True)
    assert [p.name for p in largest.files()] == ["large.jpg"]
    # a folder holding someone's files is not written into
    other = tmp_path / "other"
    (other / "images").mkdir(parents=True)
    (other / "images" / "keep.txt").write_text("mine")
    with pytest.raises(FileExistsError, match="not a corpus folder"):
        corpus.build(other, sources=[mine], heldout=heldout, log=lambda s: None)
    assert (other / "images" / "keep.txt").read_text() == "mine"
    with pytest.raises(ValueError, match="licences"):
        corpus.select([mine], heldout, licences="some")


def test_sources_command_lists_every_source(capsys):
    assert corpus.main(["sources"]) == 0
    out = capsys.readouterr().out
    for src in corpus.SOURCES:
        assert src.name in out
