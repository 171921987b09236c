"""The one reader of /proc for memory: current and peak resident size, and the peak's reset."""
from __future__ import annotations

import mmap
import sys

import pytest

from lightning_redd.runs import memory


def test_process_peak_is_at_least_the_resident_size():
    assert memory.process_peak_bytes() > 0
    rss = memory.resident_bytes()
    if rss is not None:
        assert 0 < rss <= memory.process_peak_bytes() + 2**20


@pytest.mark.skipif(sys.platform != "linux", reason="VmHWM and clear_refs are Linux's")
def test_the_high_water_mark_rises_with_an_allocation_and_resets():
    if not memory.reset_peak_rss():
        pytest.skip("clear_refs is not writable here")
    before = memory.peak_resident_bytes()
    # fresh pages from the kernel (malloc could hand back freed heap that is still resident)
    block = mmap.mmap(-1, 64 * 2**20)
    block[::4096] = b"\x01" * len(range(0, len(block), 4096))  # touch every page
    peak = memory.peak_resident_bytes()
    assert before is not None and peak >= before + 32 * 2**20
    block.close()
    assert memory.reset_peak_rss()
    assert memory.peak_resident_bytes() < peak
