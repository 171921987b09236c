"""Names of the output folder's parts: where a run writes, and its own bookkeeping.

A run writes only under :data:`OWN_DIRS` and into :data:`OWN_FILES`; those are "the run's
places", which must hold nothing but files the run's manifest lists
(:mod:`lightning_redd.runs.manifest`). :data:`LOGS` (Lightning's logger: a new
``version_N/`` each run, never an old file rewritten), :data:`MANIFEST_DIR` and
:data:`LOCK_FILE` are the run's bookkeeping; every other name in the folder is left alone.
"""
from __future__ import annotations

from pathlib import PurePosixPath

#: ``samples`` and ``std``: only with several posterior samples per image (``data.samples_per_image``)
IMAGE_DIRS = ("restored", "measured", "init", "samples", "std")
PICTURE_DIRS = ("grids", "evolution", "plots")
RECORDS = "records"
METRICS = "metrics.csv"
RUN_CONFIG = "run_config.yaml"
SUMMARY = "summary.json"
#: the CLI's CSV logger folder
LOGS = "logs"
#: the manifest: one journal per process rank (:mod:`lightning_redd.runs.manifest`)
MANIFEST_DIR = "manifest"
#: the lock of the folder: one run at a time (:mod:`lightning_redd.runs.lock`)
LOCK_FILE = ".lightning-redd.lock"

OWN_DIRS = (*IMAGE_DIRS, RECORDS, *PICTURE_DIRS)
OWN_FILES = (METRICS, SUMMARY, RUN_CONFIG)
#: every subfolder the run may create (checked for symbolic links and overlap with the inputs)
SUBFOLDERS = (*OWN_DIRS, LOGS, MANIFEST_DIR)


def is_run_path(relative: str) -> bool:
    """Whether ``relative`` (a path relative to the output folder, ``/``-separated) is one the
    run may write: a file name in :data:`OWN_FILES`, or a file under one of :data:`OWN_DIRS`,
    normalised, with no ``..``."""
    if not isinstance(relative, str) or not relative or "\\" in relative or "\0" in relative:
        return False
    path = PurePosixPath(relative)
    if path.is_absolute() or str(path) != relative or ".." in path.parts:
        return False
    return relative in OWN_FILES or (len(path.parts) > 1 and path.parts[0] in OWN_DIRS)
