"""The run folder's ownership on its own (no Lightning): the manifest journal, --overwrite's
removal, the foreign-file check and the lock."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lightning_redd.runs import checks, lock
from lightning_redd.runs.errors import RunFolderBusy
from lightning_redd.runs.folder import RunFolder
from lightning_redd.runs.layout import LOCK_FILE
from lightning_redd.runs.manifest import Manifest


def test_a_claim_is_one_append_and_a_partial_tail_is_ignored_then_closed(tmp_path):
    m = Manifest(tmp_path)
    m.claim(["restored/a.png", "records/a.json", "restored/a.png"])
    m.claim(["restored/a.png"])  # listed already: nothing appended
    assert m.path.read_text().count("\n") == 2
    with open(m.path, "a") as fh:
        fh.write('"restored/b.p')  # a kill in the middle of an append
    assert Manifest(tmp_path).listed() == {"restored/a.png", "records/a.json"}
    fresh = Manifest(tmp_path)
    fresh.claim(["restored/c\nd é.png"])  # any file name round-trips
    assert Manifest(tmp_path).listed() == {"restored/a.png", "records/a.json", "restored/c\nd é.png"}


@pytest.mark.parametrize("path", ["../outside.png", "/etc/passwd", "restored/../../x", "notes.txt", "restored", "./metrics.csv"])
def test_paths_outside_the_runs_places_are_neither_listed_nor_claimed(tmp_path, path):
    Manifest(tmp_path).folder.mkdir()
    Manifest(tmp_path).path.write_text(f'"{path}"\n"metrics.csv"\n')
    assert Manifest(tmp_path).listed() == {"metrics.csv"}
    with pytest.raises(ValueError, match="not a path of the run folder's layout"):
        Manifest(tmp_path, rank=1).claim([path])


def test_compact_merges_the_ranks_and_drops_what_was_never_written(tmp_path):
    (tmp_path / "restored").mkdir()
    (tmp_path / "restored" / "a.png").write_bytes(b"a")
    (tmp_path / "restored" / "b.png").write_bytes(b"b")
    Manifest(tmp_path, 0).claim(["restored/a.png", "restored/never.png"])
    Manifest(tmp_path, 1).claim(["restored/b.png"])
    Manifest(tmp_path).compact()
    assert [p.name for p in Manifest(tmp_path).journals()] == ["rank0.txt"]
    assert Manifest(tmp_path).listed() == {"restored/a.png", "restored/b.png"}


def test_remove_run_deletes_only_listed_files_inside_the_folder(tmp_path):
    out, outside = tmp_path / "out", tmp_path / "outside"
    outside.mkdir()
    (outside / "x.png").write_bytes(b"user")
    run = RunFolder(out)
    run.write_text("summary.json", "{}")
    run.write_bytes("restored/a.png", b"a")
    (out / "restored" / "mine.png").write_bytes(b"user")
    (out / "grids").symlink_to(outside)  # a listed path under a link out of the folder is never followed
    Manifest(out, 3).claim(["grids/x.png"])
    assert run.remove_run() == 2
    assert sorted(p.name for p in (out / "restored").iterdir()) == ["mine.png"]
    assert (outside / "x.png").read_bytes() == b"user" and Manifest(out).listed() == set()


def test_foreign_files_are_those_the_manifest_does_not_list(tmp_path):
    run = RunFolder(tmp_path)
    run.write_bytes("restored/a.png", b"a")
    (tmp_path / "restored" / ".a.png.x1.tmp").write_bytes(b"ours, in flight")
    (tmp_path / "restored" / ".mine.png.x1.tmp").write_bytes(b"not ours")
    (tmp_path / "restored" / "sub").mkdir()
    (tmp_path / "restored" / "sub" / "deep.png").write_bytes(b"user")
    (tmp_path / "notes.txt").write_bytes(b"outside the run's places: never looked at")
    assert checks.foreign_files(tmp_path) == ["restored/.mine.png.x1.tmp", "restored/sub/deep.png"]


HOLD = ("import fcntl, json, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); fcntl.flock(fd, fcntl.LOCK_EX); "
        "os.write(fd, json.dumps({'pid': os.getpid(), 'host': 'elsewhere', 'started': 'then'}).encode()); "
        "print('held', flush=True); sys.stdin.read()")


@pytest.mark.slow
@pytest.mark.multiprocess
def test_a_lock_held_elsewhere_is_refused_with_its_pid_and_host(tmp_path):
    holder = subprocess.Popen([sys.executable, "-c", HOLD, str(tmp_path / LOCK_FILE)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        for attempt in (lock.check_free, lock.acquire):
            with pytest.raises(RunFolderBusy, match=rf"in use by another lightning-redd run \(PID {holder.pid} on host elsewhere, started then\)"):
                attempt(tmp_path)
    finally:
        holder.communicate("")
    assert lock.acquire(tmp_path) == {"pid": holder.pid, "host": "elsewhere", "started": "then"}  # it died holding it
    lock.release(tmp_path)
    assert (tmp_path / LOCK_FILE).read_bytes() == b""  # a clean end


def test_holds_are_counted_per_process_and_check_free_creates_nothing(tmp_path):
    lock.check_free(tmp_path / "new")
    assert not (tmp_path / "new").exists()
    assert lock.acquire(tmp_path) is None and lock.acquire(tmp_path) is None
    lock.check_free(tmp_path)  # our own hold is no obstacle
    lock.release(tmp_path)
    assert lock.held(tmp_path)
    lock.release(tmp_path)
    assert not lock.held(tmp_path)
    info = {"pid": os.getpid()}
    assert str(info["pid"]) in lock.describe(info)
