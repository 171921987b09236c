"""Fault tolerance of a run: crashes at every point of the write sequence, resume, bad inputs
named up front, diverged images, checkpoint errors. Each numbered fault of the scale-out issue
has its own test here (the number is in the test's docstring)."""
from __future__ import annotations

import csv
import io
import os
import signal
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from crashes import Crash, crash_at
from helpers import make_images, output_files, tiny_args, written
from PIL import Image

from lightning_redd.runs import fsio
from lightning_redd.data.folder import InputProblems
from lightning_redd.data.images import load_image
from lightning_redd.lit.cli import cli, main

TESTS = Path(__file__).resolve().parents[1]


def rows(root: Path) -> list[dict]:
    with open(root / "metrics.csv", newline="") as fh:
        return list(csv.DictReader(fh))


def temporaries(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if fsio.is_temporary(p)]


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    """``main(argv)``: its exit status and what it printed to stderr."""
    with pytest.raises(SystemExit) as info:
        main(argv)
        raise SystemExit(0)
    return int(info.value.code or 0), capsys.readouterr().err


# --------------------------------------------------------------------------- crashes at a write
# The write order itself, with a crash injected at every write and manifest append of the image
# writer, is tested at unit level (tests/runs/test_write_order.py). Here: the command's own
# writes (run_config.yaml first), that the command's sequence is the writer's, and three crashes
# end to end (the run record; a manifest append after the first image, resumed through the data's
# skip of finished images; after metrics.csv, resumed with nothing left to restore) plus one real
# SIGKILL.
def unlisted(root: Path) -> list[str]:
    """Files of the run's places its manifest does not list (must stay empty at every kill)."""
    from lightning_redd.runs.checks import foreign_files

    return foreign_files(root)


@pytest.fixture(scope="module")
def crash_setup(tmp_path_factory):
    """Two images, batch 1, and the uninterrupted run's files and log of writes."""
    tmp = tmp_path_factory.mktemp("crash")
    images = make_images(tmp / "in", n=2)
    with pytest.MonkeyPatch.context() as m:
        log = crash_at(m, 0, "after")
        cli(tiny_args(tmp / "reference", images, "--data.batch_size", "1", steps=3))
    return tmp, images, output_files(tmp / "reference"), log


def image_writes(name: str) -> list[str]:
    own = [f"restored/{name}.png", f"init/{name}.png", f"measured/{name}.png", f"grids/{name}.png", f"records/{name}.json"]
    return ["+" + " ".join(sorted(own))] + own


#: writes of the run (batch 1, 2 images): the run record (its manifest append, the file), then
#: the image writer's order (tests/runs/test_write_order.py) for these files
WRITES = ["+run_config.yaml", "run_config.yaml", *image_writes("img0"), *image_writes("img1"),
          "+metrics.csv summary.json", "metrics.csv", "summary.json", "+plots/psnr.png", "plots/psnr.png"]


def test_the_command_writes_its_run_record_then_the_writers_order(crash_setup):
    """The command adds only the run record, before any image; the rest is the writer's order,
    whose every write is crash-tested at unit level."""
    assert crash_setup[3] == WRITES


@pytest.mark.slow
@pytest.mark.parametrize("k, phase", [(2, "during"), (9, "during"), (16, "after")],
                         ids=["run_config.yaml", "append-img1", "metrics.csv"])
def test_crash_then_rerun_gives_the_uninterrupted_result(crash_setup, monkeypatch, k, phase):
    """Faults 2 and 9, end to end: a crash in the middle of the run record's write (a stale
    temporary file), in the middle of the manifest append of the second image's files (a partial
    line; the first image finished, skipped by the rerun), and after metrics.csv (every image
    finished, summary.json not written: the rerun has nothing to restore and finishes the run).
    The command's checks and clean-up at the start run in each rerun. The manifest lists every
    file the run wrote at the crash; the same command again must finish the run byte for byte,
    one row per image, no temporary file left, and a manifest of exactly the run's files."""
    tmp, images, reference, _ = crash_setup
    out = tmp / f"run_{k}_{phase}"
    argv = tiny_args(out, images, "--data.batch_size", "1", steps=3)
    with monkeypatch.context() as m:
        log = crash_at(m, k, phase)
        with pytest.raises(Crash):
            cli(argv)
    assert log == WRITES[:k]
    assert unlisted(out) == []
    cli(argv)
    assert output_files(out) == reference
    assert [r["name"] for r in rows(out)] == ["img0", "img1"]
    assert not temporaries(out)
    assert manifest(out) == manifest(tmp / "reference")
    assert (out / "summary.json").is_file()


def manifest(root: Path) -> set[str]:
    from lightning_redd.runs.manifest import Manifest

    listed = Manifest(root).listed()
    assert all((root / p).is_file() for p in listed)
    return listed


@pytest.mark.slow
@pytest.mark.multiprocess
def test_sigkill_mid_run_then_rerun(crash_setup, tmp_path):
    """Faults 2 and 9 with a real SIGKILL, in a fresh process, in the middle of the second
    image's restored PNG write (a stale temporary file; no handler of the run runs). A kill
    between an image's PNGs and its record is the unit-level crash after its grid's write."""
    tmp, images, reference, _ = crash_setup
    k, phase = 7, "during"  # file write 7 (appends not counted): img1's restored PNG
    out = tmp_path / f"kill_{k}"
    argv = tiny_args(out, images, "--data.batch_size", "1", steps=3)
    runner = [sys.executable, str(Path(__file__).with_name("crash_runner.py")), str(k), phase, *argv]
    proc = subprocess.run(runner, cwd=TESTS, capture_output=True, text=True, timeout=300)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    assert temporaries(out) and unlisted(out) == []
    cli(argv)
    assert output_files(out) == reference
    assert not temporaries(out)


# --------------------------------------------------------------------------- numbered faults
def test_output_folder_holding_the_inputs_is_refused(tmp_path, capsys):
    """Fault 1: --data.root OUT/restored --trainer.default_root_dir OUT used to overwrite the
    user's images. Now refused before anything is written, exit status 2, one message."""
    out = tmp_path / "out"
    images = make_images(out / "restored", n=2)
    before = {p.name: p.read_bytes() for p in images.iterdir()}
    status, err = run_main(tiny_args(out, images), capsys)
    assert status == 2
    assert "overlap" in err and "trainer.default_root_dir" in err and "Traceback" not in err
    assert {p.name: p.read_bytes() for p in images.iterdir()} == before
    assert not (out / "records").exists() and not (out / "metrics.csv").exists()


def test_sixteen_bit_png_is_scaled_not_clipped(tmp_path):
    """Fault 3: a 16-bit grayscale PNG was clipped at 255 (99.5 % of its pixels white)."""
    ramp = (np.arange(16 * 16).reshape(16, 16) * 256).astype(np.uint16)  # 0 .. 65280
    Image.fromarray(ramp).save(tmp_path / "g16.png")
    assert Image.open(tmp_path / "g16.png").mode == "I;16"
    x = load_image(tmp_path / "g16.png", 16, 3, "center_crop")
    expected = torch.from_numpy(ramp.astype(np.float32) / 65535.0) * 2 - 1
    assert torch.allclose(x[0], expected, atol=1e-6) and torch.equal(x[0], x[2])
    assert (x >= 0.999).float().mean() < 0.01


def corrupt_png(path: Path, size: int = 20) -> None:
    """A PNG whose chunk checksums are all valid but whose compressed pixel data is garbage."""
    raw = b"".join(b"\x00" + bytes(range(size * 3)) for _ in range(size))
    data = bytearray(zlib.compress(raw))
    data[10:30] = bytes(20)  # damage the deflate stream, then give it a valid CRC

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    header = struct.pack(">IIBBBBB", size, size, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", bytes(data)) + chunk(b"IEND", b""))


def test_corrupt_pixel_data_is_caught_before_any_compute(tmp_path):
    """Fault 4a: a PNG with valid checksums but corrupt pixel data passed the up-front check and
    aborted the run after a batch was solved."""
    images = make_images(tmp_path / "in", n=2)
    corrupt_png(images / "zz_corrupt.png")
    with Image.open(images / "zz_corrupt.png") as im:
        im.verify()  # the old check (checksums only) passes
    with pytest.raises(InputProblems, match=r"zz_corrupt.png"):
        cli(tiny_args(tmp_path / "out", images))
    assert not (tmp_path / "out" / "records").exists()


def test_unwritable_output_folder_is_refused_before_any_compute(tmp_path):
    """Fault 4b: a read-only output folder failed only after compute was spent. (``chattr +i``
    makes a folder unwritable even for root, who bypasses permission bits.)"""
    images = make_images(tmp_path / "in", n=1)
    out = tmp_path / "locked"
    out.mkdir()
    if subprocess.run(["chattr", "+i", str(out)], capture_output=True).returncode != 0:
        pytest.skip("chattr +i is not available here")
    try:
        with pytest.raises(InputProblems, match=r"not writable"):
            cli(tiny_args(out, images))
    finally:
        subprocess.run(["chattr", "-i", str(out)], check=True)


@pytest.mark.parametrize("header", ["name,psnr,ssim,extra", "image,score"])
def test_foreign_metrics_csv_is_refused_before_any_compute(tmp_path, header):
    """Fault 4c/4d: a foreign metrics.csv (extra column, or no name column: 'KeyError: name')."""
    images = make_images(tmp_path / "in", n=1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "metrics.csv").write_text(header + "\nx,1,2\n")
    with pytest.raises(InputProblems, match=r"no lightning-redd run wrote there \(not in its manifest.*: metrics.csv\."):
        cli(tiny_args(out, images))
    assert (out / "metrics.csv").read_text() == header + "\nx,1,2\n"


def test_every_bad_file_is_reported_at_once_with_a_count(tmp_path):
    """Fault 5: bad files were reported in stages, lists cut at 5 with no count."""
    images = make_images(tmp_path / "in", n=2)
    for i in range(7):
        (images / f"note{i}.txt").write_text("x")
    (images / "broken.png").write_bytes(b"not a png")
    corrupt_png(images / "corrupt.png")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(images / "img0.jpg")  # shares the stem of img0.png
    with pytest.raises(InputProblems) as info:
        cli(tiny_args(tmp_path / "out", images))
    msg = str(info.value)
    assert "10 problem(s)" in msg
    for name in [f"note{i}.txt" for i in range(7)] + ["broken.png", "corrupt.png", "img0.jpg"]:
        assert name in msg


@pytest.mark.slow
def test_diverged_images_are_recorded_not_written_and_exit_nonzero(tmp_path, capsys):
    """Fault 6: a diverged solve (lr 1e30) wrote black PNGs and nan rows and exited 0, and
    resume would have treated them as finished."""
    images = make_images(tmp_path / "in", n=2)
    out = tmp_path / "out"
    argv = tiny_args(out, images, "--model.solver.init_args.lr", "1e30")
    status, err = run_main(argv, capsys)
    assert status == 3 and "2 of 2 images diverged" in err
    assert not (out / "restored").exists() or not list((out / "restored").glob("*.png"))
    assert [(r["name"], r["status"], r["psnr"]) for r in rows(out)] == [("img0", "diverged", ""), ("img1", "diverged", "")]
    status, _ = run_main(argv, capsys)  # not finished: the same command redoes them
    assert status == 3


@pytest.mark.slow
def test_a_diverged_image_leaves_its_batch_mates_unchanged(tmp_path, monkeypatch, capsys):
    """A diverged image: batch mates bit-identical to a run where it does not diverge, a status
    row, non-zero exit, and a resume that redoes it and nothing else."""
    from lightning_redd.lit.writer import RestorationWriter

    images = make_images(tmp_path / "in", n=2)
    Image.open(images / "img1.png").save(images / "zbad.png")
    seen: list[dict] = []
    original = RestorationWriter.write
    monkeypatch.setattr(RestorationWriter, "write", lambda self, tr, out: (seen.append(out), original(self, tr, out))[1])

    def run(out: Path, poisoned: str) -> tuple[int, dict]:
        seen.clear()
        argv = tiny_args(out, images, "--data.batch_size", "3", "--model.operator", "helpers.PoisonedInpainting",
                         "--model.operator.init_args.poisoned", f"[{poisoned}]")
        status, _ = run_main(argv, capsys)
        return status, {n: b.x_hat[i].clone() for b in seen for i, n in enumerate(b.names)}

    status_ok, clean = run(tmp_path / "clean", "nobody")
    status_bad, poisoned = run(tmp_path / "poisoned", "zbad")
    assert status_ok == 0 and status_bad == 3
    for name in ("img0", "img1"):
        assert torch.equal(clean[name], poisoned[name]), name
    assert {r["name"]: r["status"] for r in rows(tmp_path / "poisoned")} == {"img0": "ok", "img1": "ok", "zbad": "diverged"}
    assert not (tmp_path / "poisoned" / "restored" / "zbad.png").exists()
    status, again = run(tmp_path / "poisoned", "zbad")  # resume: only the diverged image is redone
    # the resumed batch is solved whole (its composition is kept) and only zbad is written again
    assert status == 3 and list(written(seen)) == ["zbad"] and torch.equal(again["img0"], clean["img0"])


@pytest.mark.slow
def test_logs_go_under_the_output_folder_not_the_working_directory(tmp_path, monkeypatch):
    """Fault 7: every run wrote ./outputs/demo/logs whatever --trainer.default_root_dir said."""
    images = make_images(tmp_path / "in", n=1)
    elsewhere = tmp_path / "cwd"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    argv = tiny_args(tmp_path / "out", images)
    at = argv.index("--trainer.logger")
    del argv[at : at + 2]  # the default logger
    cli(argv)
    assert list(elsewhere.iterdir()) == []
    assert (tmp_path / "out" / "logs").is_dir()


def _bad_checkpoints(tmp: Path) -> dict[str, tuple[Path, str]]:
    from safetensors.torch import save_file

    empty = tmp / "empty.pt"
    empty.write_bytes(b"")
    full = tmp / "full.safetensors"
    save_file({"a": torch.zeros(1000)}, str(full))
    truncated = tmp / "truncated.safetensors"
    truncated.write_bytes(full.read_bytes()[:200])
    wrong = tmp / "wrong.pt"
    torch.save({f"layer{i}.weight": torch.zeros(2) for i in range(12)}, wrong)
    unsafe = tmp / "unsafe.pt"
    torch.save({"w": torch.zeros(1), "obj": io.BytesIO()}, unsafe)
    return {
        "empty": (empty, r"empty.pt.* is empty \(0 bytes\)"),
        "truncated": (truncated, r"truncated.safetensors.*truncated or corrupt"),
        "wrong keys": (wrong, r"\d+ missing keys.*\(\+\d+ more\).*12 unexpected keys"),
        "pickle refused": (unsafe, r"refused to load .*unsafe.pt"),
    }


@pytest.mark.parametrize("case", ["empty", "truncated", "wrong keys", "pickle refused"])
def test_checkpoint_errors_name_the_file_in_one_message(tmp_path, capsys, case):
    """Fault 8: an empty .pt gave 'IndexError: list index out of range'; checkpoint errors were
    buried under the CLI's Union-type message and a Namespace dump; a truncated .safetensors
    error did not name the file."""
    import re

    path, pattern = _bad_checkpoints(tmp_path)[case]
    images = make_images(tmp_path / "in", n=1)
    argv = tiny_args(tmp_path / "out", images, "--model.prior", "lightning_redd.priors.adm.ADMPrior",
                     "--model.prior.init_args.image_size", "16", "--model.prior.init_args.num_channels", "32",
                     "--model.prior.init_args.channel_mult", "1,2", "--model.prior.init_args.attention_resolutions", "8",
                     "--model.prior.init_args.checkpoint", str(path))
    status, err = run_main(argv, capsys)
    assert status == 2
    assert re.search(pattern, err, re.S), err
    assert "Traceback" not in err and "Union" not in err and "Namespace" not in err
    assert not (tmp_path / "out" / "records").exists()


@pytest.mark.slow
def test_stale_temporary_files_are_removed_at_the_next_start(tmp_path):
    """Fault 9: a crash in the middle of a PNG write left a hidden .name.*.png.tmp forever. Only
    temporaries of files the run's manifest lists are the run's to remove."""
    images = make_images(tmp_path / "in", n=1)
    out = tmp_path / "out"
    cli(tiny_args(out, images))
    stale = out / "restored" / ".img0.png.abc123.tmp"
    stale.write_bytes(b"partial")
    keep = [out / ".hidden_user_file", out / ".notes.txt.abc123.tmp"]
    for p in keep:
        p.write_bytes(b"mine")
    cli(tiny_args(out, images))
    assert not stale.exists() and all(p.read_bytes() == b"mine" for p in keep)


# --------------------------------------------------------------------------- the run record
@pytest.mark.slow
def test_rerun_with_other_settings_is_refused_with_the_keys(tmp_path, capsys):
    images = make_images(tmp_path / "in", n=2)
    out = tmp_path / "out"
    cli(tiny_args(out, images, "--data.limit", "1"))
    before = output_files(out)
    status, err = run_main(tiny_args(out, images, "--model.solver.init_args.lr", "0.5"), capsys)
    assert status == 2 and "model.solver.init_args.lr: 0.25 there, 0.5 now" in err and "--overwrite true" in err
    assert output_files(out) == before
    # settings that do not decide results may change on resume: batch size, limit
    cli(tiny_args(out, images, "--data.batch_size", "2"))
    assert [r["name"] for r in rows(out)] == ["img0", "img1"]
    # --overwrite replaces the old run
    cli(tiny_args(out, images, "--model.solver.init_args.lr", "0.5", "--data.limit", "1", "--overwrite", "true"))
    assert [r["name"] for r in rows(out)] == ["img0"]
    assert not (out / "restored" / "img1.png").exists()


@pytest.mark.slow
def test_created_files_follow_the_umask(tmp_path):
    images = make_images(tmp_path / "in", n=1)
    old = os.umask(0o022)
    try:
        cli(tiny_args(tmp_path / "out", images))
    finally:
        os.umask(old)
    for p in [tmp_path / "out" / "metrics.csv", tmp_path / "out" / "restored" / "img0.png", tmp_path / "out" / "records" / "img0.json"]:
        assert p.stat().st_mode & 0o777 == 0o644, p
