"""The catalogue of hostile inputs ("never report a wrong result as success", items 5-11 and
the input parts of 13 and 14): each file is built in ``tmp_path`` and must be read correctly
(with a note) or refused before any compute, naming the file and the fix.

Most cases call the data module's own check (what ``setup`` runs before any compute); the CLI
cases run ``main`` on the tiny problem of ``tests/helpers.py`` and assert one clean message.
"""
from __future__ import annotations

import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import make_images, tiny_args
from PIL import Image, ImageFile, ImageOps

from lightning_redd.data.folder import ImageFolderData, InputProblems
from lightning_redd.data.images import check_folder, load_image
from lightning_redd.data.measured import MeasuredFolderData, read_measurement
from lightning_redd.lit.cli import main
from lightning_redd.operators.blur import KernelBlur
from lightning_redd.operators.file_params import ParamFileError, read_jpeg_tables
from lightning_redd.operators.inpainting import Inpainting
from lightning_redd.operators.super_resolution import BlockAverageSR

RNG = np.random.default_rng(0)


# --------------------------------------------------------------------------- builders
def pixels(h: int, w: int, seed: int = 0) -> np.ndarray:
    return (np.random.default_rng(seed).random((h, w, 3)) * 255).astype(np.uint8)


def png_cut_at_row(path: Path, arr: np.ndarray, rows: int) -> None:
    """A PNG whose deflate stream holds only ``rows`` of its rows, cleanly ended, every CRC valid."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[r].tobytes() for r in range(rows))
    header = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def save_rotated(path: Path, arr: np.ndarray, orientation: int = 6, **kw) -> None:
    """``arr`` stored as it is, tagged with EXIF ``orientation`` (6: shown turned 90 degrees clockwise)."""
    im = Image.fromarray(arr)
    exif = im.getexif()
    exif[0x0112] = orientation
    im.save(path, exif=exif, **kw)


def image_data(root: Path, out: Path, masks: Path | None = None, **kw) -> ImageFolderData:
    params = {"param_folders": {"mask": str(masks)}, "file_params": Inpainting(mask="file").file_params()} if masks else {}
    return ImageFolderData(root=str(root), image_size=16, output_dir=str(out), **params, **kw)


def measured_data(root: Path, out: Path, operator, folders: dict | None = None, **kw) -> MeasuredFolderData:
    return MeasuredFolderData(root=str(root), image_size=16, output_dir=str(out), file_params=operator.file_params(),
                              param_folders={k: str(v) for k, v in (folders or {}).items()}, **kw)


def problems_of(data) -> str:
    with pytest.raises(InputProblems) as info:
        data.check()
    return str(info.value)


def run_main(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
        raise SystemExit(0)
    return int(info.value.code or 0), capsys.readouterr().err


# --------------------------------------------------------------------------- 5: mask values
@pytest.mark.parametrize("case", ["zero_one_gray", "zero_one_rgb", "all_black"])
def test_5_mask_files_of_0_1_values_and_all_missing_masks(tmp_path, case):
    images, masks = make_images(tmp_path / "in", n=1, size=16), tmp_path / "masks"
    masks.mkdir()
    kept = RNG.random((16, 20)) > 0.3
    arr = {"zero_one_gray": kept.astype(np.uint8), "zero_one_rgb": np.stack([kept] * 3, -1).astype(np.uint8),
           "all_black": np.zeros((16, 20), np.uint8)}[case]
    Image.fromarray(arr).save(masks / "img0.png")  # what mask.astype(uint8) writes
    data = image_data(images, tmp_path / "out", masks)
    if case == "all_black":
        msg = problems_of(data)
        assert "img0.png marks every pixel missing" in msg and "mask_missing" in msg
        return
    dataset = data.check()
    mask = dataset.tensors(0)["params"]["mask"]
    centre = torch.from_numpy(kept[:, 2:18].astype(np.float32))  # the image's centre crop, as the mask's
    assert torch.equal(mask[0], centre) and 0.6 < float(mask.mean()) < 0.8
    notes = data.params.notes(["img0"])
    assert len(notes) == 1 and "values 0/1 (largest value 1) read as 0/1" in notes[0] and "img0.png" in notes[0]


@pytest.mark.slow
def test_5_a_run_on_0_1_masks_says_so_and_succeeds(tmp_path, capsys, caplog):
    images, masks = make_images(tmp_path / "in", n=1, size=16), tmp_path / "masks"
    masks.mkdir()
    Image.fromarray((RNG.random((16, 20)) > 0.3).astype(np.uint8)).save(masks / "img0.png")
    status, err = run_main(tiny_args(tmp_path / "out", images, "--model.operator.init_args.mask", "file",
                                     "--data.param_folders", f"{{mask: {masks}}}", steps=2), capsys)
    assert status == 0 and "Traceback" not in err
    assert "mask files of values 0/1 (largest value 1) read as 0/1" in caplog.text + err  # the notes are logged


# --------------------------------------------------------------------------- 6: truncated files
@pytest.mark.parametrize("where", ["image", "mask", "measurement", "ground_truth", "truncated_flag_on"])
def test_6_a_png_cut_at_a_row_boundary_is_refused(tmp_path, monkeypatch, where):
    images, out = make_images(tmp_path / "in", n=1, size=16), tmp_path / "out"
    folder = {"image": images, "truncated_flag_on": images}.get(where, tmp_path / where)
    folder.mkdir(exist_ok=True)
    name = "img0.png" if where != "image" else "zcut.png"
    png_cut_at_row(folder / name, pixels(16, 20), rows=9)
    if where == "truncated_flag_on":  # another library turned Pillow's padding of truncated files on
        monkeypatch.setattr(ImageFile, "LOAD_TRUNCATED_IMAGES", True)
        (folder / "zbytes.png").write_bytes((images / "img0.png").read_bytes()[:300])
    if where in ("image", "truncated_flag_on"):
        data = image_data(images, out)
    elif where == "mask":
        data = image_data(images, out, folder)
    else:
        measurements = tmp_path / "y"
        measurements.mkdir()
        Image.fromarray(pixels(16, 16)).save(measurements / "img0.png")
        if where == "measurement":
            measurements = folder
        data = measured_data(measurements, out, Inpainting(mask="random"),
                             ground_truth=str(folder) if where == "ground_truth" else None)
    msg = problems_of(data)
    assert f"{name}: its pixel data ends after 9 of its 16 rows" in msg and "replace the file" in msg
    if where == "truncated_flag_on":
        assert "zbytes.png" in msg and "truncated" in msg and ImageFile.LOAD_TRUNCATED_IMAGES is True  # restored


# --------------------------------------------------------------------------- 7: NaN kernels
@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_7_a_kernel_holding_nan_or_inf_is_refused(tmp_path, bad):
    y, kernels = tmp_path / "y", tmp_path / "kernels"
    y.mkdir(), kernels.mkdir()
    np.save(y / "img0.npy", RNG.random((16, 16, 3)))
    k = np.full((3, 3), 1 / 9)
    k[1, 1] = bad
    np.save(kernels / "img0.npy", k)
    msg = problems_of(measured_data(y, tmp_path / "out", KernelBlur(), {"kernel": kernels}))
    assert "kernel" in msg and "img0.npy holds NaN or infinite values" in msg and "summing to 1" in msg


# --------------------------------------------------------------------------- 8: EXIF orientation
@pytest.mark.parametrize("where", ["image", "mask", "measurement", "evaluate", "jpeg_tables"])
def test_8_exif_orientation_is_applied_with_a_note(tmp_path, capsys, where):
    stored = pixels(48, 96)  # stored 96 wide, 48 high; orientation 6 shows it 48 wide, 96 high
    upright = np.ascontiguousarray(np.rot90(stored, -1))
    folder = tmp_path / where
    folder.mkdir()
    if where == "image":
        save_rotated(folder / "photo.jpg", stored, quality=95)
        report = check_folder(folder, image_size=16)
        assert report.sizes[folder / "photo.jpg"] == (48, 96) and "EXIF orientation" in " ".join(report.notes)
        with Image.open(folder / "photo.jpg") as im:
            expected = ImageOps.exif_transpose(im).convert("RGB").crop((0, 24, 48, 72)).resize((16, 16), Image.Resampling.BICUBIC)
        x = load_image(folder / "photo.jpg", 16)
        assert torch.equal(x, torch.from_numpy(np.asarray(expected)).permute(2, 0, 1).float().div(127.5).sub(1.0))
    elif where == "mask":
        images = tmp_path / "in"
        images.mkdir()
        Image.fromarray(upright[16:32, 14:34]).save(images / "img0.png")  # the image: 20 wide, 16 high
        kept = RNG.random((16, 20)) > 0.5
        save_rotated(folder / "img0.png", (np.rot90(kept, 1) * 255).astype(np.uint8))  # stored 16x20, shown 20x16
        data = image_data(images, tmp_path / "out", folder)
        mask = data.check().tensors(0)["params"]["mask"][0]
        assert torch.equal(mask, torch.from_numpy(kept[:, 2:18].astype(np.float32)))
        assert any("EXIF orientation" in n for n in data.params.notes(["img0"]))
    elif where == "measurement":
        save_rotated(folder / "img0.png", stored[:16, :32])
        y = read_measurement(folder / "img0.png")
        expected = torch.from_numpy(np.rot90(stored[:16, :32], -1) / 255.0).permute(2, 0, 1) * 2 - 1
        assert y.shape == (3, 32, 16) and torch.allclose(y, expected.float(), atol=1e-6)
    elif where == "jpeg_tables":  # its 8x8 blocks are the stored picture's, not the upright one's
        save_rotated(folder / "img0.jpg", stored, quality=50)
        with pytest.raises(ParamFileError, match=r"img0.jpg carries an EXIF rotation.*jpegtran -perfect"):
            read_jpeg_tables(folder / "img0.jpg")
    else:  # the reference is stored sideways; the restored image is its upright centre
        (tmp_path / "restored").mkdir()
        Image.fromarray(upright[24:72]).save(tmp_path / "restored" / "photo.png")
        save_rotated(folder / "photo.png", stored)
        status, err = run_main(["evaluate", "--restored", str(tmp_path / "restored"), "--reference", str(folder)], capsys)
        assert status == 0 and "1 matched pair(s); ssim 1.0000" in err
        assert "note: 1 reference image(s) not 48x48, fitted to it by --resize center_crop_resize" in err


# --------------------------------------------------------------------------- 9: .npy units
@pytest.mark.parametrize("scale, fix", [(255, "divide it by 255"), (65535, "divide it by 65535"), (1, None)])
def test_9_npy_measurements_in_8_or_16_bit_units_are_refused(tmp_path, scale, fix):
    y = tmp_path / "y"
    y.mkdir()
    low = RNG.random((4, 4, 3))
    noisy = low + RNG.normal(0, 0.15, low.shape)  # [0, 1] plus noise: values a little outside [0, 1]
    np.save(y / "img0.npy", (low if scale > 1 else noisy) * scale)
    data = measured_data(y, tmp_path / "out", BlockAverageSR(factor=4))
    if fix is None:
        assert data.check() and data.measurement_shape == (3, 4, 4)
        return
    msg = problems_of(data)
    assert "img0.npy: values span [" in msg and fix in msg and "[-1, 2]" in msg


# --------------------------------------------------------------------------- 10: one file per stem
@pytest.mark.parametrize("kind", ["mask", "kernel"])
def test_10_two_parameter_files_with_one_stem_are_refused_naming_both(tmp_path, kind):
    folder = tmp_path / f"{kind}s"
    folder.mkdir()
    if kind == "mask":
        images = make_images(tmp_path / "in", n=1, size=16)
        (images / "img0.png").rename(images / "coffee.png")
        Image.fromarray(((RNG.random((16, 20)) > 0.3) * 255).astype(np.uint8)).save(folder / "coffee.png")
        Image.fromarray(np.zeros((16, 20, 3), np.uint8)).save(folder / "coffee.jpg")
        data = image_data(images, tmp_path / "out", folder)
    else:
        y = tmp_path / "y"
        y.mkdir()
        np.save(y / "coffee.npy", RNG.random((16, 16, 3)))
        np.save(folder / "coffee.npy", np.full((3, 3), 1 / 9))
        Image.fromarray(np.full((3, 3), 255, np.uint8)).save(folder / "coffee.png")
        data = measured_data(y, tmp_path / "out", KernelBlur(), {"kernel": folder})
    msg = problems_of(data)
    first, second = ("coffee.jpg", "coffee.png") if kind == "mask" else ("coffee.npy", "coffee.png")
    assert f"{first}, {second} in {folder}: several {kind} files for image 'coffee'; keep one" in msg


# --------------------------------------------------------------------------- 11: evaluate sizes
@pytest.mark.parametrize("case", ["mixed", "not_square", "image_size_given"])
def test_11_evaluate_refuses_restored_images_of_mixed_sizes(tmp_path, capsys, case):
    restored, reference = tmp_path / "restored", tmp_path / "reference"
    restored.mkdir(), reference.mkdir()
    sizes = {"mixed": [(32, 32), (16, 16)], "not_square": [(64, 40)], "image_size_given": [(32, 32), (16, 16)]}[case]
    for i, (w, h) in enumerate(sizes):
        Image.fromarray(pixels(h, w, i)).save(restored / f"a{i}.png")
        Image.fromarray(pixels(32, 32, i)).save(reference / f"a{i}.png")
    extra = ["--image-size", "32"] if case == "image_size_given" else []
    status, err = run_main(["evaluate", "--restored", str(restored), "--reference", str(reference), *extra], capsys)
    assert "Traceback" not in err
    if case == "image_size_given":
        assert status == 0 and "note: 1 restored image(s) not 32x32, fitted to it by --resize" in err
        assert "restored images smaller than 32x32 upscaled to it: 16x16: 1 file(s) (a1.png)" in err
        return
    what = "of several sizes (32x32: 1 file(s) (a0.png); 16x16: 1 file(s) (a1.png))" if case == "mixed" \
        else "not square (64x40: 1 file(s) (a0.png))"
    assert status == 2 and f"restored images in {restored} are {what}" in err
    assert "pass --image-size S" in err and "--resize" in err and len(err.strip().splitlines()) == 1


# --------------------------------------------------------------------------- 13: messages
@pytest.mark.parametrize("value, reason, hint", [
    ("lightning_redd.solvers.red_diff.RedDif", "module lightning_redd.solvers.red_diff has no class 'RedDif'",
     "did you mean RedDiff (lightning_redd.solvers.red_diff.RedDiff)?"),
    ("RedDif", "no class is called 'RedDif'", "did you mean RedDiff"),
    ("lightning_redd.solvers.nope.RedDiff", "cannot import lightning_redd.solvers.nope.RedDiff: no module lightning_redd.solvers.nope",
     "Solver classes: Classical, DDIM, DDRM, DPS, PiGDM, RedDiff"),
    ("lightning_redd.lit.cli.main", "lightning_redd.lit.cli.main is a function, not a Solver class", "Solver classes:"),
])
def test_13_a_class_path_naming_no_usable_class_says_why(tmp_path, capsys, value, reason, hint):
    images = make_images(tmp_path / "in", n=1, size=16)
    status, err = run_main(tiny_args(tmp_path / "out", images, "--model.solver", value), capsys)
    lines = err.strip().splitlines()
    assert status == 2 and lines[0] == f"lightning-redd: error: model.solver: {reason}"
    assert "Traceback" not in err and len(lines) <= 4
    if hint.startswith("Solver classes: ") and hint != "Solver classes:":
        # solver classes that other test modules define in this interpreter are listed too
        listed = next(ln for ln in lines if ln.strip().startswith("Solver classes: ")).strip()
        assert set(hint.removeprefix("Solver classes: ").split(", ")) <= set(listed.removeprefix("Solver classes: ").split(", "))
    else:
        assert hint in err


@pytest.mark.parametrize("content, said", [({"epoch": 3}, "holds no tensors (keys there: ['epoch'])"),
                                           ({"state_dict": {}}, "holds no tensors under 'state_dict'"),
                                           ([1, 2], "holds a list, not a state dict")])
def test_13_a_checkpoint_without_tensors_is_named(tmp_path, capsys, content, said):
    images, ckpt = make_images(tmp_path / "in", n=1, size=16), tmp_path / "weights.pt"
    torch.save(content, ckpt)
    status, err = run_main(tiny_args(tmp_path / "out", images, "--model.prior", "lightning_redd.priors.adm.ADMPrior",
                                     "--model.prior.init_args.checkpoint", str(ckpt),
                                     "--model.prior.init_args.image_size", "64",
                                     "--model.prior.init_args.num_channels", "32"), capsys)
    assert status == 2 and "Traceback" not in err
    assert f"lightning-redd: error: checkpoint {str(ckpt)!r} {said}" in err and "torch.save(model.state_dict()" in err


# --------------------------------------------------------------------------- 14: folder entries
def _entry(folder: Path, case: str) -> str:
    """Make the hostile entry ``case`` in ``folder``; returns its name."""
    if case == "broken_link":
        os.symlink(folder / "gone.png", folder / "link.png")
        return "link.png"
    if case == "link_loop":
        os.symlink(folder / "loop_b.png", folder / "loop_a.png")
        os.symlink(folder / "loop_a.png", folder / "loop_b.png")
        return "loop_a.png"
    if case == "folder_named_png":
        (folder / "dir.png").mkdir()
        return "dir.png"
    if case == "dots_png":
        Image.fromarray(pixels(16, 16)).save(folder / "...png", format="PNG")
        return "...png"
    if case == "tiff_pages":
        Image.fromarray(pixels(16, 16)).save(folder / "pages.tif", save_all=True, append_images=[Image.fromarray(pixels(16, 16, 1))])
        return "pages.tif"
    if case == "mpo_jpeg":  # a phone photo with a preview: the first picture is the photo
        im = Image.fromarray(pixels(16, 16))
        im.save(folder / "phone.jpg", format="MPO", save_all=True, append_images=[im.resize((8, 8))])
        return "phone.jpg"
    if case == "subfolder":
        (folder / "more").mkdir()
        return "more"
    raise ValueError(case)


@pytest.mark.parametrize("case, kind, said", [
    ("broken_link", "problem", "link.png: a broken symbolic link or a loop of links (to "),
    ("link_loop", "problem", "loop_a.png: a broken symbolic link or a loop of links"),
    ("folder_named_png", "problem", "dir.png: a folder, named like an image; rename it or move it out of"),
    ("tiff_pages", "problem", "pages.tif: holds 2 pages, and one file is one image; save each of its pages as a file of its own"),
    ("dots_png", "note", "1 file(s) skipped as hidden (names starting with '.'); rename them to use them: ...png"),
    ("subfolder", "note", "1 subfolder(s) skipped (folders are not searched recursively): more"),
    ("mpo_jpeg", "note", "1 image(s) with extra pictures (MPO JPEG: previews, depth maps): the first, main picture used: phone.jpg"),
])
def test_14_odd_folder_entries_are_reported(tmp_path, case, kind, said):
    images = make_images(tmp_path / "in", n=1, size=16)
    name = _entry(images, case)
    report = check_folder(images, image_size=16)
    found = report.problems if kind == "problem" else report.notes
    assert any(said in p for p in found), (found, report.notes)
    assert [f.name for f in report.files] == ["img0.png"] + (["phone.jpg"] if case == "mpo_jpeg" else [])
    if kind == "problem":
        assert name in problems_of(image_data(images, tmp_path / "out"))
    else:
        assert not report.problems


def test_14_a_folder_holding_only_folders_points_at_them(tmp_path):
    make_images(tmp_path / "top" / "photos", n=1)
    problems = check_folder(tmp_path / "top", image_size=16).problems
    assert len(problems) == 1 and problems[0].startswith(f"no images found in {tmp_path / 'top'}; allowed extensions .png")
    assert problems[0].endswith("; it holds folders (photos): point the setting at one of them")
