"""The catalog build fixes glibc's mmap threshold (export/heap.py); elsewhere it does nothing, quietly."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from edge_search_export import heap


@pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's")
def test_glibc_takes_the_fixed_threshold():
    assert heap.return_large_blocks() is True


def test_without_a_c_library_nothing_is_set(monkeypatch):
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert heap.return_large_blocks() is False


def test_a_c_library_without_mallopt_is_left_alone(monkeypatch):
    class NoMallopt:
        def __init__(self, name):
            pass

        def __getattr__(self, name):
            raise AttributeError(name)

    monkeypatch.setattr(ctypes.util, "find_library", lambda name: "libc.so.6")
    monkeypatch.setattr(heap.ctypes, "CDLL", NoMallopt)
    assert heap.return_large_blocks() is False
