"""Hostile and careless input, round two (issue 11), one small case per class:
  1 outputs never replace what is not ours      2 no work before trust
  3 trust fails closed                          4 bounded work from a tiny file
  5 only regular files are read, with a cap     6 terminal escapes from catalog text
  7 file-system failures are one line           8 manifest values checked against use
  9 arguments validated where they are owned   10 catalog conflicts reported
Each error must be our own, one line, exit 2, and leave nothing half-written.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import stat
import sys

import numpy as np
import pytest

import edge_search  # noqa: F401  (onnxruntime before usearch)
from edge_search import cli, files
from edge_search.errors import EdgeSearchError


def run_main(capsys, *args):
    """`edge-search ARGS` in this process: (exit code, stdout, stderr)."""
    code = cli.main([str(a) for a in args])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(code, err, *fragments):
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    for f in fragments:
        assert f in err, err
    return lines[0]


def specials(tmp_path):
    """A FIFO, a symlink to a file outside and a dangling symlink: none may be replaced by a write."""
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    link = tmp_path / "link"
    link.symlink_to(victim)
    dangling = tmp_path / "dangling"
    dangling.symlink_to(tmp_path / "nowhere")
    return {"FIFO": fifo, "symbolic link": link, "dangling link": dangling}


def unchanged(tmp_path, paths):
    assert stat.S_ISFIFO(os.lstat(paths["FIFO"]).st_mode)
    assert os.path.islink(paths["symbolic link"]) and os.path.islink(paths["dangling link"])
    assert (tmp_path / "victim.txt").read_text() == "keep me"
    assert not (tmp_path / "nowhere").exists()


# --- 1. writing over what is there ---------------------------------------------------------------
def test_atomic_writes_refuse_fifos_and_links_and_leave_them(tmp_path):
    paths = specials(tmp_path)
    for kind, p in paths.items():
        with pytest.raises(EdgeSearchError, match="refusing to write a file over it"):
            files.atomic_write_bytes(p, b"data")
    unchanged(tmp_path, paths)
    assert not list(tmp_path.glob(".*.tmp"))
    (tmp_path / "plain").write_text("old")
    files.atomic_write_bytes(tmp_path / "plain", b"new")  # a regular file of ours is replaced
    assert (tmp_path / "plain").read_bytes() == b"new"


def test_keygen_name_and_out_stay_where_they_were_told(capsys, tmp_path):
    keys = tmp_path / "keys"
    for name in ("../../x", "a/b", "..", ".hidden", "x\x1b[2J"):
        one_line(*run_main(capsys, "keygen", "--out", keys, "--name", name)[::2], "--name", "plain file name")
    assert not keys.exists() and not (tmp_path.parent / "x.key.pem").exists()
    paths = specials(tmp_path)
    for p in paths.values():
        one_line(*run_main(capsys, "keygen", "--out", p)[::2], "refusing to write a folder")
    unchanged(tmp_path, paths)
    # the key file names themselves: a FIFO there is refused and left as it is
    os.mkdir(keys)
    os.mkfifo(keys / "edge-search.pub.pem")
    one_line(*run_main(capsys, "keygen", "--out", keys)[::2], "already exists")
    assert sorted(p.name for p in keys.iterdir()) == ["edge-search.pub.pem"]


def test_eval_report_and_save_frames_refuse_special_targets_before_any_work(capsys, tmp_path):
    from edge_search.kiosk import FrameSaver

    paths = specials(tmp_path)
    for p in paths.values():
        # --queries does not exist: the --report check must come first
        one_line(*run_main(capsys, "eval", "--bundle", tmp_path / "none", "--queries", tmp_path / "q.csv",
                           "--report", p)[::2], "--report", "refusing to write a folder")
        with pytest.raises(EdgeSearchError, match="--save-frames .*refusing"):
            FrameSaver(p)
    unchanged(tmp_path, paths)
    saver = FrameSaver(tmp_path / "frames")
    os.mkfifo(tmp_path / "frames" / "000001-frame000007.jpg")

    class Lk:
        class frame:
            index, image = 7, np.zeros((8, 8, 3), np.uint8)

    with pytest.raises(EdgeSearchError, match="FIFO"):
        saver.save(Lk)
    assert stat.S_ISFIFO(os.lstat(tmp_path / "frames" / "000001-frame000007.jpg").st_mode)


@pytest.mark.export
def test_pack_and_export_refuse_special_out_paths(capsys, tiny_bundle, tmp_path):
    paths = specials(tmp_path)
    for p in paths.values():
        one_line(*run_main(capsys, "pack", tiny_bundle, "--out", p)[::2], "--out", "refusing to write a file")
        # export refuses before reading the catalog (which does not exist here)
        one_line(*run_main(capsys, "export", "--catalog", tmp_path / "no.csv", "--out", p, "--force",
                           "--pretrained", "random", "--quiet")[::2], "--out", "refusing to write a folder")
    unchanged(tmp_path, paths)
    code, out, _ = run_main(capsys, "pack", tiny_bundle, "--out", tmp_path / "ok.tar")
    assert code == 0 and (tmp_path / "ok.tar").is_file()
