"""The catalogue of the issue "never touch a file the run did not write": one parametrised test
per item (1, 2, 3, 4, 13, 14), each case with the expected message or outcome and, for items
1-4, the checksums of the user's files before and after. Item 4 starts real processes."""
from __future__ import annotations

import errno
import hashlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import ConvPrior, make_images, output_files, tiny_args

from lightning_redd.lit.cli import main
from lightning_redd.runs import fsio
from lightning_redd.runs.manifest import Manifest

TESTS = Path(__file__).resolve().parents[1]
ROOT = TESTS.parent


class GatedPrior(ConvPrior):
    """A ConvPrior whose first call marks ``started`` and that then waits while ``gate`` exists
    (at most a minute): a run that holds its folder for as long as a test needs."""

    def __init__(self, *, gate: str, started: str, seed: int = 0) -> None:
        super().__init__(seed=seed)
        self.gate, self.started = gate, started

    def predict_eps(self, x_t, t):
        Path(self.started).touch()
        deadline = time.monotonic() + 60
        while os.path.exists(self.gate) and time.monotonic() < deadline:
            time.sleep(0.05)
        return super().predict_eps(x_t, t)


def checksums(*folders: Path) -> dict[str, str]:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for f in folders for p in sorted(f.rglob("*")) if p.is_file()}


def run_main(argv: list[str], capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
        raise SystemExit(0)
    return int(info.value.code or 0), capsys.readouterr().err


def put(root: Path, *names: str) -> None:
    for name in names:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(f"the user's {name}".encode())


def with_logger(argv: list[str]) -> list[str]:
    at = argv.index("--trainer.logger")
    return argv[:at] + argv[at + 2:]


def refused(status: int, err: str, *needles: str) -> None:
    assert status == 2 and "Traceback" not in err, err
    for needle in needles:
        assert needle in err, (needle, err)


# --------------------------------------------------------------------------- item 1
@pytest.mark.parametrize("files, shown", [
    (("restored/img0.png", "summary.json", "plots/psnr.png"), "3 file(s)"),
    (tuple(f"restored/mine{i}.png" for i in range(8)), "8 file(s)"),
])
def test_item1_a_folder_holding_files_of_its_own_is_refused(tmp_path, capsys, files, shown):
    images, out = make_images(tmp_path / "in", n=2), tmp_path / "out"
    put(out, *files)
    before = checksums(images, out)
    status, err = run_main(tiny_args(out, images), capsys)
    refused(status, err, shown, "no lightning-redd run wrote there", "--trainer.default_root_dir", *sorted(files)[:5])
    assert ("(+3 more)" in err) == (len(files) == 8)
    assert checksums(images, out) == before and sorted(p.name for p in out.iterdir()) == sorted({f.split("/")[0] for f in files})


# --------------------------------------------------------------------------- item 2
@pytest.mark.parametrize("case", ["never a run", pytest.param("a run and a file of the user's in restored/", marks=pytest.mark.slow),
                                  pytest.param("a run and a file outside its places", marks=pytest.mark.slow)])
def test_item2_overwrite_deletes_only_the_files_of_the_manifest(tmp_path, capsys, case):
    images, out = make_images(tmp_path / "in", n=2), tmp_path / "out"
    if case != "never a run":
        assert run_main(tiny_args(out, images), capsys)[0] == 0
    listed = Manifest(out).listed()
    mine = {"never a run": ("plots/my_figure.png", "measured/my_scan.png", "grids/settings.json", "summary.json"),
            "a run and a file of the user's in restored/": ("restored/zz_mine.png",),
            "a run and a file outside its places": ("notes.txt",)}[case]
    put(out, *mine)
    before = checksums(images, out)
    status, err = run_main(tiny_args(out, images, "--model.solver.init_args.lr", "0.5", "--overwrite", "true"), capsys)
    if case == "a run and a file outside its places":
        assert status == 0 and f"--overwrite: removed {len(listed)} file(s) the previous run wrote" in err
        assert (out / "notes.txt").read_bytes() == b"the user's notes.txt"
        assert checksums(images) == {k: v for k, v in before.items() if k.startswith(str(images))}
        return
    refused(status, err, f"{len(mine)} file(s)", "--overwrite deletes only the files of the manifest", *mine)
    assert checksums(images, out) == before


# --------------------------------------------------------------------------- item 3
@pytest.mark.parametrize("subfolder, to_input", [("restored", True), ("grids", False), ("logs", True)])
def test_item3_a_symlinked_output_subfolder_is_resolved_and_refused(tmp_path, capsys, subfolder, to_input):
    images, out, elsewhere = make_images(tmp_path / "in", n=2), tmp_path / "out", tmp_path / "elsewhere"
    put(elsewhere, "keep.png")
    out.mkdir()
    (out / subfolder).symlink_to(images if to_input else elsewhere, target_is_directory=True)
    before = checksums(images, elsewhere)
    status, err = run_main(tiny_args(out, images), capsys)
    refused(status, err, f"output subfolder {out / subfolder} is a symbolic link to", "outside the output folder")
    assert ("overlap" in err) == to_input
    assert checksums(images, elsewhere) == before


# --------------------------------------------------------------------------- item 4
def _args(out: Path, images: Path, gate: Path, subcommand: str) -> list[str]:
    return tiny_args(out, images, "--model.prior", "test_catalogue_ownership.GatedPrior", "--model.prior.init_args.gate",
                     str(gate), "--model.prior.init_args.started", str(gate.with_suffix(".started")), subcommand=subcommand)


def _start(args: list[str]) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), str(TESTS), str(TESTS / "lit")])}
    return subprocess.Popen([sys.executable, "-m", "lightning_redd.lit.cli", *args], cwd=TESTS, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _wait_for(path: Path, proc: subprocess.Popen) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()[1][-3000:]
        time.sleep(0.1)


@pytest.mark.slow
@pytest.mark.multiprocess
@pytest.mark.parametrize("first, end", [("predict", "finishes"), ("fit", "killed")])
def test_item4_one_run_per_folder_at_a_time(tmp_path, capsys, first, end):
    """A real process holds the folder (gated in its first solve); a second run, predict and
    then fit (from this process), is refused before anything, naming the first's PID and host,
    and leaves the first's in-flight files alone; the first finishes. A killed holder's lock is
    taken over with a note."""
    images, out, gate = make_images(tmp_path / "in", n=2), tmp_path / "out", tmp_path / "gate"
    put(out, "notes.txt")
    gate.touch()
    holder = _start(_args(out, images, gate, first))
    _wait_for(gate.with_suffix(".started"), holder)
    inflight = out / f".run_config.yaml.inflight{fsio.TMP_SUFFIX}"  # stands in for a write in flight
    inflight.write_bytes(b"partial")
    before = checksums(images) | {"notes": checksums(out)[str(out / "notes.txt")]}
    try:
        for second in ("predict", "fit"):
            status, err = run_main(_args(out, images, gate, second), capsys)
            assert status == 2 and "Traceback" not in err, err[-3000:]
            assert f"is in use by another lightning-redd run (PID {holder.pid} on host {socket.gethostname()}" in err
            assert inflight.exists()
    finally:
        if end == "killed":
            holder.send_signal(signal.SIGKILL)
        gate.unlink()
        _, holder_err = holder.communicate(timeout=300)
    if end == "killed":
        status, err = run_main(_args(out, images, gate, "predict"), capsys)
        assert status == 0, err[-3000:]
        assert "ended without finishing" in err and f"PID {holder.pid} on host {socket.gethostname()}" in err
        assert not inflight.exists()  # the dead run's temporary, cleaned under the lock
    else:
        assert holder.returncode == 0, holder_err[-3000:]
    assert checksums(images) | {"notes": checksums(out)[str(out / "notes.txt")]} == before
    assert sorted(p.name for p in (out / "records").iterdir()) == ["img0.json", "img1.json"]


# --------------------------------------------------------------------------- item 13
def _chattr(flag: str, path: Path) -> bool:
    return subprocess.run(["chattr", flag, str(path)], capture_output=True).returncode == 0


@pytest.mark.parametrize("case", ["read-only folder", "read-only logs/", pytest.param("disk full", marks=pytest.mark.slow),
                                  pytest.param("corrupt run_config.yaml", marks=pytest.mark.slow), "title"])
def test_item13_one_clean_message_with_the_path_and_the_fix(tmp_path, capsys, monkeypatch, case):
    images, out = make_images(tmp_path / "in", n=2), tmp_path / "out"
    argv = tiny_args(out, images, "--data.batch_size", "1", steps=3)
    if case.startswith("read-only"):
        target = out / "logs" if case == "read-only logs/" else out
        target.mkdir(parents=True)
        if not _chattr("+i", target):
            pytest.skip("chattr +i is not available here")
        try:
            status, err = run_main(with_logger(argv), capsys)
        finally:
            _chattr("-i", target)
        refused(status, err, f"output folder {out} is not writable ({target}: Operation not permitted)", "fix its permissions")
        return
    if case == "disk full":
        assert run_main(tiny_args(tmp_path / "reference", images, "--data.batch_size", "1", steps=3), capsys)[0] == 0
        original, count = fsio.atomic_write, [0]

        def full(path, write, **kwargs):
            count[0] += 1
            if count[0] != 7:  # img1's restored PNG
                return original(path, write, **kwargs)

            def failing(fh):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
            return original(path, failing, **kwargs)

        with monkeypatch.context() as m:
            m.setattr(fsio, "atomic_write", full)
            status, err = run_main(argv, capsys)
        assert status == 4 and "Traceback" not in err, err
        assert f"No space left on device ({out / 'restored' / 'img1.png'})" in err
        assert "1 of 2 image(s) are finished and kept" in err and "resumes with the 1 image(s) left" in err
        assert run_main(argv, capsys)[0] == 0
        assert output_files(out) == output_files(tmp_path / "reference")
        return
    if case == "corrupt run_config.yaml":
        assert run_main(argv, capsys)[0] == 0
        (out / "run_config.yaml").write_text("signature: [a\n  b: {")
        status, err = run_main(argv, capsys)
        refused(status, err, f"{out / 'run_config.yaml'} is not a readable lightning-redd run record", "--trainer.default_root_dir")
        assert len(err.strip().splitlines()) == 1
        return
    put(out, "metrics.csv")
    status, err = run_main(argv, capsys)
    refused(status, err, "metrics.csv")
    assert err.startswith(f"lightning-redd: error: output folder {out} (trainer.default_root_dir): 1 problem(s)") and "data.root" not in err


# --------------------------------------------------------------------------- item 14
def _hold_lock(out: Path) -> subprocess.Popen:
    """Another process holding the folder's lock, as a run does (it prints once it holds it)."""
    code = ("import fcntl, json, os, socket, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
            "fcntl.flock(fd, fcntl.LOCK_EX); os.write(fd, json.dumps({'pid': os.getpid(), 'host': socket.gethostname()}).encode()); "
            "print('held', flush=True); time.sleep(120)")
    out.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen([sys.executable, "-c", code, str(out / ".lightning-redd.lock")], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "held"
    return proc


@pytest.mark.parametrize("case", ["overlap", "foreign files", "locked", pytest.param("plot after resume", marks=pytest.mark.slow)])
def test_item14_nothing_created_before_the_checks_pass(tmp_path, capsys, monkeypatch, case):
    images = make_images(tmp_path / "in", n=2)
    out = images / "out" if case == "overlap" else tmp_path / "out"
    argv = with_logger(tiny_args(out, images))
    if case == "plot after resume":
        from lightning_redd import pictures

        drawn = []
        original = pictures.psnr_plot
        monkeypatch.setattr(pictures, "psnr_plot", lambda curves, **kw: (drawn.append(sorted(curves)), original(curves, **kw))[1])
        assert run_main(argv + ["--data.limit", "1"], capsys)[0] == 0
        assert run_main(argv, capsys)[0] == 0  # resumes: restores img1 only
        assert drawn == [["img0"], ["img0", "img1"]]
        assert (out / "plots" / "psnr.png").is_file()
        return
    if case == "foreign files":
        put(out, "restored/img0.png")
    holder = _hold_lock(out) if case == "locked" else None
    before = sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*"))
    try:
        status, err = run_main(argv, capsys)
    finally:
        if holder is not None:
            holder.kill()
            holder.wait()
    expected = {"overlap": "overlap", "foreign files": "no lightning-redd run wrote there", "locked": "in use by another"}[case]
    refused(status, err, expected)
    assert sorted(p.relative_to(tmp_path) for p in tmp_path.rglob("*")) == before
    assert not (out / "logs").exists()
