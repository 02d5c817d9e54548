"""A step's big buffers come from the heap and stay there once freed, so the next step reuses them."""

import os
import platform
import subprocess
import sys

import pytest

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="the heap settings are glibc's")

# A fresh interpreter: where a 24 MiB block lands, and whether freeing it hands memory back.
CHILD = """
import ctypes, sys, torch
from rnncli import heap
libc = ctypes.CDLL(None)
libc.sbrk.restype = ctypes.c_void_p
if sys.argv[1] == "keep":
    assert heap.keep_freed_memory()
block = torch.empty(24 << 20, dtype=torch.uint8).fill_(1)  # a layer's gates for every step, say
brk = libc.sbrk(0)  # the heap's end
in_heap = block.data_ptr() < brk  # the heap lies below its end; mapped blocks lie far above it
del block
print(in_heap, libc.sbrk(0) == brk)  # freed heap memory kept when the end has not moved back
"""


def child(mode: str) -> str:
    p = subprocess.run([sys.executable, "-c", CHILD, mode], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}, check=False)
    assert p.returncode == 0, p.stderr
    return p.stdout.strip()


def test_a_big_block_comes_from_the_heap_and_stays_after_it_is_freed():
    assert child("keep") == "True True"


def test_by_default_glibc_maps_such_a_block_apart():
    """The contrast that makes the test above mean something: glibc's own choice for 24 MiB."""
    assert child("default").startswith("False")
