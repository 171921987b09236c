"""Run ``lightning-redd`` and SIGKILL the process at its ``k``-th file write (a test helper).

    python crash_runner.py K PHASE ARGS...

PHASE ``before``: killed just before write K starts; ``during``: killed while writing it (a
partial temporary file exists, the destination is untouched).
"""
from __future__ import annotations

import os
import signal
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for helpers.ConvPrior

from lightning_redd.runs import fsio  # noqa: E402
from lightning_redd.lit.cli import cli  # noqa: E402


def main() -> None:
    k, phase, argv = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
    original, count = fsio.atomic_write, [0]

    def patched(path, write, **kwargs):
        count[0] += 1
        if count[0] == k:
            if phase == "during":
                path = Path(path)
                path.parent.mkdir(parents=True, exist_ok=True)
                with open(path.parent / f".{path.name}.killed{fsio.TMP_SUFFIX}", "wb") as fh:
                    fh.write(b"partial")
            os.kill(os.getpid(), signal.SIGKILL)
        return original(path, write, **kwargs)

    fsio.atomic_write = patched
    cli(argv)


if __name__ == "__main__":
    main()
