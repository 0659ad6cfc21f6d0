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
    from edge_search.kiosk.loop import FrameSaver

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


# --- 2. work before trust ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def signed_pack(tiny_bundle, tmp_path_factory):
    """A bundle signed by key 'a', packed; key 'b' is another (untrusted) key."""
    from edge_search.shipping.pack import pack
    from edge_search.core.signing import keygen, sign_bundle

    d = tmp_path_factory.mktemp("signedpack")
    keygen(d, "a")
    keygen(d, "b")
    shutil.copytree(tiny_bundle, d / "bundle")
    sign_bundle(d / "bundle", d / "a.key.pem")
    pack(d / "bundle", d / "signed.tar")
    return d


def _members(path):
    import tarfile

    with tarfile.open(path) as tar:
        return [m.name for m in tar]


def _raw_header(name, kind, size):
    """One ustar header block claiming `size` bytes of body (the body itself is not there)."""
    import tarfile

    info = tarfile.TarInfo(name)
    info.type, info.size = kind, size
    return info.tobuf(format=tarfile.GNU_FORMAT)  # GNU: base-256 sizes past 8 GiB


def test_pack_puts_manifest_and_signature_first(signed_pack):
    names = _members(signed_pack / "signed.tar")
    assert names[:2] == ["manifest.json", "manifest.sig"] and len(names) > 2


def test_untrusted_archive_is_refused_from_its_first_two_members(signed_pack, tmp_path):
    """An archive signed by another key, followed by garbage: refused by the signature, so nothing after
    the first two members was read (reading on would fail as 'malformed') and no file was written."""
    from edge_search.errors import InstallError
    from edge_search.shipping.install import install

    data = (signed_pack / "signed.tar").read_bytes()
    names = _members(signed_pack / "signed.tar")
    import tarfile

    with tarfile.open(signed_pack / "signed.tar") as tar:
        third = tar.getmember(names[2]).offset
    evil = tmp_path / "evil.tar"
    evil.write_bytes(data[:third] + _raw_header("model.onnx", b"0", 1 << 40) + b"\xff" * 4096)
    into = tmp_path / "k"
    with pytest.raises(InstallError, match="signature does not match"):
        install(evil, into, trusted_key=signed_pack / "b.pub.pem")
    assert not list(into.glob(".staging-*")) and not list((into / "bundles").iterdir())
    # the trusted key accepts the same prefix and only then finds the bad member
    with pytest.raises(InstallError, match="model.onnx"):
        install(evil, into, trusted_key=signed_pack / "a.pub.pem")
    install(signed_pack / "signed.tar", into, trusted_key=signed_pack / "a.pub.pem")
    assert (into / "current" / "manifest.sig").is_file()


def test_with_a_key_an_archive_must_begin_with_manifest_and_signature(signed_pack, tmp_path):
    import tarfile

    from edge_search.errors import InstallError
    from edge_search.shipping.install import install

    reordered = tmp_path / "reordered.tar"
    with tarfile.open(signed_pack / "signed.tar") as src, tarfile.open(reordered, "w") as dst:
        members = list(src)
        for m in members[2:] + members[:2]:
            dst.addfile(m, src.extractfile(m))
    with pytest.raises(InstallError, match="does not begin with manifest.json and manifest.sig"):
        install(reordered, tmp_path / "k", trusted_key=signed_pack / "a.pub.pem")
    install(reordered, tmp_path / "k")  # no key configured: an archive in any order still installs (older packs)


@pytest.mark.parametrize("kind", [b"x", b"g", b"L", b"S"])
def test_extended_headers_cannot_make_us_allocate(tmp_path, kind):
    """A 512-byte PAX / GNU long-name header claiming 1 GiB, and a sparse member: refused from the header."""
    import resource

    from edge_search.errors import InstallError
    from edge_search.shipping.install import install

    evil = tmp_path / "evil.tar"
    evil.write_bytes(_raw_header("././@PaxHeader", kind, 1 << 30) + b"a" * 1024 + b"\0" * 1024)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with pytest.raises(InstallError, match="refused: .*(1073741824 bytes|sparse)"):
        install(evil, tmp_path / "k")
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 200_000  # KiB: never near 1 GiB


def test_declared_sizes_that_cannot_fit_are_refused_before_writing(tiny_bundle, tmp_path):
    import io
    import tarfile

    from edge_search.errors import InstallError
    from edge_search.shipping.install import install

    m = json.loads((tiny_bundle / "manifest.json").read_text())
    m["files"]["model.onnx"]["bytes"] = 1 << 50  # a petabyte
    evil = tmp_path / "huge.tar"
    with tarfile.open(evil, "w") as tar:
        data = json.dumps(m).encode()
        info = tarfile.TarInfo("manifest.json")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
        for name in m["files"]:
            tar.add(tiny_bundle / name, arcname=name)
    with pytest.raises(InstallError, match=f"declares {(1 << 50) + 0}|declares [0-9]+ bytes, .* free"):
        install(evil, tmp_path / "k")
    assert not list((tmp_path / "k").glob(".staging-*"))


# --- 3. trust that fails open ------------------------------------------------------------------------
def test_empty_key_settings_refuse(capsys, monkeypatch, tmp_path):
    one_line(*run_main(capsys, "search", "--bundle", tmp_path, "x.jpg", "--trusted-key", "")[::2],
             "--trusted-key is empty")
    monkeypatch.setenv("EDGE_SEARCH_TRUSTED_KEY", " ")
    one_line(*run_main(capsys, "install", tmp_path / "b.tar", "--into", tmp_path / "k")[::2],
             "EDGE_SEARCH_TRUSTED_KEY is set but empty")
    assert not (tmp_path / "k").exists()


@pytest.mark.parametrize("default", ["dangling link", "folder", "loop"])
def test_an_unusable_default_key_refuses_unsigned_bundles(capsys, monkeypatch, tmp_path, tiny_bundle, default):
    from edge_search.core.signing import config_dir

    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "cfg"))
    key = config_dir() / "trusted.pub.pem"
    key.parent.mkdir(parents=True)
    if default == "dangling link":
        key.symlink_to(tmp_path / "gone.pub.pem")
    elif default == "folder":
        key.mkdir()
    else:
        key.symlink_to(key)
    img = tiny_bundle / json.loads((tiny_bundle / "products.jsonl").read_text().splitlines()[0])["thumbnail"]
    one_line(*run_main(capsys, "search", "--bundle", tiny_bundle, img)[::2], "trusted.pub.pem")
    one_line(*run_main(capsys, "install", tiny_bundle, "--into", tmp_path / "k")[::2], "trusted.pub.pem")
    assert not (tmp_path / "k" / "current").exists()


def test_a_config_folder_we_cannot_read_is_one_line(capsys, monkeypatch, tmp_path):
    from edge_search.core import signing

    monkeypatch.setenv("XDG_CONFIG_HOME", "/tmp/" + "x" * 5000)  # lstat fails: ENAMETOOLONG
    one_line(*run_main(capsys, "search", "--bundle", tmp_path, "x.jpg")[::2], "cannot tell whether a trusted key")
    # tests run as root, who may read anything: EACCES is injected where the lookup meets the file system
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))
    real = os.lstat

    def denied(path, *a, **kw):
        if str(path).startswith(str(tmp_path / "edge-search")):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path, *a, **kw)

    monkeypatch.setattr(signing.os, "lstat", denied)
    err = one_line(*run_main(capsys, "search", "--bundle", tmp_path, "x.jpg")[::2], "Permission denied")
    assert "refusing to go on" in err


# --- 5. special files ---------------------------------------------------------------------------------
@pytest.fixture
def no_hang():
    """A read that blocks on a FIFO fails the test in 10 s instead of hanging the suite."""
    import signal

    def boom(*_):
        raise TimeoutError("hung on a special file")

    old = signal.signal(signal.SIGALRM, boom)
    signal.alarm(10)
    yield
    signal.alarm(0)
    signal.signal(signal.SIGALRM, old)


def special_inputs(tmp_path):
    fifo = tmp_path / "fifo.jpg"
    os.mkfifo(fifo)
    zero = tmp_path / "zero.jpg"
    zero.symlink_to("/dev/zero")
    big = tmp_path / "big.jpg"
    with open(big, "wb") as f:  # sparse: costs no disk
        f.truncate(files.MAX_IMAGE_BYTES + 1)
    return {"FIFO": fifo, "device file": zero, "byte limit": big}


def test_images_catalogs_and_queries_are_read_only_from_regular_files(no_hang, tmp_path, capsys):
    from edge_search.core.catalog import read_catalog
    from edge_search.evaluation.evaluate import read_queries
    from edge_search.core.images import load_image

    for fragment, p in special_inputs(tmp_path).items():
        with pytest.raises(EdgeSearchError, match=fragment):
            load_image(p)
        if fragment == "byte limit":  # tables are read line by line: their cap is far larger
            continue
        for suffix in (".csv", ".jsonl"):
            target = tmp_path / f"cat-{p.stem}{suffix}"
            target.symlink_to(p)
            with pytest.raises(EdgeSearchError, match=fragment):
                read_catalog(target)
        with pytest.raises(EdgeSearchError, match=fragment):
            read_queries(p)


def test_lines_are_written_a_chunk_at_a_time_whole_or_not_at_all(tmp_path, monkeypatch):
    monkeypatch.setattr(files, "LINES_CHUNK", 10)
    writes = []
    real = files.write_all
    monkeypatch.setattr(files, "write_all", lambda f, data: (writes.append(data), real(f, data)))
    lines = [f"line {i} é\n" for i in range(7)]
    files.atomic_write_lines(tmp_path / "t.jsonl", iter(lines))
    assert (tmp_path / "t.jsonl").read_text(encoding="utf-8") == "".join(lines)
    assert len(writes) == 7 and b"".join(writes) == "".join(lines).encode("utf-8")
    (tmp_path / "elsewhere").write_text("theirs")
    os.symlink(tmp_path / "elsewhere", tmp_path / "link.jsonl")
    with pytest.raises(EdgeSearchError, match="link.jsonl"):
        files.atomic_write_lines(tmp_path / "link.jsonl", iter(lines))
    assert (tmp_path / "elsewhere").read_text() == "theirs"

    def full(f, data):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    monkeypatch.setattr(files, "write_all", full)
    with pytest.raises(EdgeSearchError, match="new.jsonl"):
        files.atomic_write_lines(tmp_path / "new.jsonl", iter(lines))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["elsewhere", "link.jsonl", "t.jsonl"]

def test_a_bounded_read_takes_what_the_file_holds_not_its_limit(tmp_path):
    import tracemalloc

    small, big = tmp_path / "small", tmp_path / "big"
    small.write_bytes(b"x" * 100)
    big.write_bytes(os.urandom(3 << 20))  # more than one read's worth
    tracemalloc.start()
    try:
        assert files.read_regular(small, limit=files.MAX_TABLE_BYTES) == b"x" * 100
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20  # reading 100 bytes under a 1 GiB limit allocated 1 GiB before
    assert files.read_regular(big, limit=3 << 20) == big.read_bytes()
    assert files.read_regular(tmp_path / "small", limit=100) == b"x" * 100
    (tmp_path / "empty").write_bytes(b"")
    assert files.read_regular(tmp_path / "empty", limit=10) == b""
    with pytest.raises(EdgeSearchError, match="limit"):
        files.read_regular(big, limit=(3 << 20) - 1)


def test_manifests_signatures_keys_and_install_sources_refuse_special_files(no_hang, tmp_path):
    from edge_search.core.bundle import Bundle
    from edge_search.errors import InstallError
    from edge_search.shipping.install import install
    from edge_search.core.signing import keygen, verify_signature

    fifo, zero = list(special_inputs(tmp_path).values())[:2]
    for fragment, p in (("FIFO", fifo), ("device file", zero)):
        b = tmp_path / f"bundle-{p.stem}"
        b.mkdir()
        (b / "manifest.json").symlink_to(p)
        with pytest.raises(EdgeSearchError, match=fragment):
            Bundle.open(b)
        with pytest.raises(InstallError, match=fragment):
            install(p, tmp_path / "k")
        with pytest.raises(EdgeSearchError, match=fragment):  # as a trusted key
            verify_signature(b, b"{}", p)
        (b / "manifest.sig").symlink_to(p)
        keygen(tmp_path, f"k-{p.stem}")
        with pytest.raises(EdgeSearchError, match=fragment):  # as a signature
            verify_signature(b, b"{}", tmp_path / f"k-{p.stem}.pub.pem")


# --- 4. unbounded work from a tiny file ------------------------------------------------------------------
def _strip_png(w, h):
    import cv2

    ok, buf = cv2.imencode(".png", np.zeros((h, w), np.uint8), [cv2.IMWRITE_PNG_COMPRESSION, 9])
    return buf.tobytes()


@pytest.mark.parametrize("w, h", [(20_000, 1), (60_000, 1), (1, 20_000), (51, 1)])
def test_long_strips_are_refused_before_decoding(w, h):
    import resource
    import time

    from edge_search.core.images import decode_image

    data = _strip_png(w, h)
    assert len(data) < 1000
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    t0 = time.perf_counter()
    with pytest.raises(EdgeSearchError, match=f"{w}x{h}, an aspect ratio over 50:1 .*before decoding"):
        decode_image(data, "strip.png")
    assert time.perf_counter() - t0 < 0.05
    assert resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before < 50_000  # KiB


def test_every_resize_stays_under_the_pixel_limit():
    from edge_search.core.images import MAX_PIXELS
    from edge_search.core.manifest import PreprocessCfg
    from edge_search.core.preprocess import preprocess

    cfg = PreprocessCfg(size=(224, 224))
    assert preprocess(np.zeros((10, 500, 3), np.uint8), cfg).shape == (3, 224, 224)  # 50:1 is fine
    # an array handed over directly (a frame, not a file) is bounded at the resize itself
    with pytest.raises(EdgeSearchError, match=f"would exceed the {MAX_PIXELS} pixel limit"):
        preprocess(np.zeros((1, 300_000, 3), np.uint8), cfg)


# --- 7. tracebacks from the file system ---------------------------------------------------------------------
@pytest.fixture
def full_disk(monkeypatch):
    """Every write through files.write_all fails as on a full disk (mount is not ours to use in tests)."""
    def enospc(f, data):
        f.write(data[: len(data) // 2])  # part of it lands, as on a real full disk
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(files, "write_all", enospc)


def test_keygen_on_a_full_disk_leaves_nothing_and_a_retry_works(capsys, monkeypatch, tmp_path, full_disk):
    keys = tmp_path / "keys"
    one_line(*run_main(capsys, "keygen", "--out", keys)[::2], "edge-search.key.pem", "No space left on device")
    assert list(keys.iterdir()) == []  # no 0-byte private key, no temp file
    monkeypatch.undo()
    code, out, _ = run_main(capsys, "keygen", "--out", keys)
    assert code == 0 and sorted(p.name for p in keys.iterdir()) == ["edge-search.key.pem", "edge-search.pub.pem"]


def test_eval_report_on_a_full_disk_or_behind_a_file_is_one_line(capsys, tmp_path, full_disk):
    from edge_search.evaluation.report import write_report
    from edge_search.evaluation.evaluate import EvalReport

    (tmp_path / "file").write_text("x")
    one_line(*run_main(capsys, "eval", "--bundle", tmp_path, "--queries", tmp_path / "q.csv",
                       "--report", tmp_path / "file" / "report")[::2], "a file is in the way")
    report = EvalReport(queries=1, recall={1: 1.0}, mrr=1.0, no_match_share=0.0, min_score=0.5,
                        per_category={"a": {"queries": 1, "recall@1": 1.0}}, confused=[],
                        latency_ms={"embed_p50": 1, "embed_p95": 1, "search_p50": 1, "search_p95": 1})
    with pytest.raises(EdgeSearchError, match="recall_at_k.png: cannot write .No space left on device"):
        write_report(report, tmp_path / "report", "t")
    assert list((tmp_path / "report").iterdir()) == []


@pytest.mark.parametrize("case", ["current is a folder", "current is a loop", "previous is a file",
                                  ".lock is a folder"])
def test_install_folder_oddities_are_one_line(capsys, tiny_bundle, tmp_path, case):
    into = tmp_path / "k"
    into.mkdir()
    name, kind = case.split(" is a ")
    target = into / name
    if kind == "folder":
        target.mkdir()
    elif kind == "loop":
        target.symlink_to(name)
    else:
        target.write_text("x")
    for args in (("install", tiny_bundle, "--into", into), ("rollback", "--into", into)):
        err = one_line(*run_main(capsys, *args)[::2], str(target))
        assert "move it away" in err or "cannot" in err or "nothing installed" in err
    assert not list(into.glob(".staging-*"))


def test_export_and_demo_need_the_export_extra_in_one_line(tmp_path):
    import subprocess

    runtime = os.environ.get("EDGE_SEARCH_RUNTIME_PYTHON")
    if not runtime:
        pytest.skip("EDGE_SEARCH_RUNTIME_PYTHON (the runtime-only venv) is not set; tests/run.sh sets it")
    for cmd in (["demo", "--workdir", str(tmp_path / "demo")],
                ["export", "--catalog", str(tmp_path / "c.csv"), "--out", str(tmp_path / "b")]):
        proc = subprocess.run([runtime, "-m", "edge_search", *cmd], capture_output=True, text=True, timeout=120)
        one_line(proc.returncode, proc.stderr, f"{cmd[0]} needs the [export] extra", "pip install")
    assert not (tmp_path / "demo").exists()


@pytest.mark.export
def test_export_out_that_cannot_be_written_fails_before_the_training(capsys, tmp_path):
    import time

    (tmp_path / "file").write_text("x")
    t0 = time.perf_counter()
    one_line(*run_main(capsys, "export", "--catalog", tmp_path / "none.csv", "--out", tmp_path / "file" / "b",
                       "--pretrained", "random", "--quiet")[::2], "--out", "a file is in the way")
    assert time.perf_counter() - t0 < 60  # the import of torch, not a training run


# --- 6. terminal escapes from catalog text -------------------------------------------------------------------
EVIL = "\x1b]0;owned\x07\r\n\x1b[2J\x9b31m\u202e\x7f!"


def _rewrite_checksums(bundle, m):
    import hashlib

    for name in m["files"]:
        data = (bundle / name).read_bytes()
        m["files"][name] = {"sha256": hashlib.sha256(data).hexdigest(), "bytes": len(data)}
    (bundle / "manifest.json").write_text(json.dumps(m, indent=2))


@pytest.fixture(scope="module")
def evil_bundle(tiny_bundle, tmp_path_factory):
    """The sample bundle with escape sequences in every product's id, name and category, and in its name."""
    b = tmp_path_factory.mktemp("evil") / "b"
    shutil.copytree(tiny_bundle, b)
    rows = [json.loads(line) for line in (b / "products.jsonl").read_text().splitlines()]
    renamed = {}
    for r in rows:
        renamed[r["id"]] = r["id"] + EVIL
        r.update(id=renamed[r["id"]], name=(r.get("name") or "") + EVIL, category=(r.get("category") or "") + EVIL)
    (b / "products.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    m = json.loads((b / "manifest.json").read_text())
    m["name"] = "bundle" + EVIL
    cal = m["search"].get("calibration")
    if cal:
        cal["product_min_score"] = {renamed[k]: v for k, v in cal["product_min_score"].items()}
    _rewrite_checksums(b, m)
    return b, rows


def _clean_output(text):
    for c in ("\x1b", "\x07", "\x9b", "\u202e", "\x7f", "\r"):
        assert c not in text, repr(text[:400])
    assert "\\x1b" in text, text[:400]


def test_search_inspect_eval_and_verify_escape_catalog_text(capsys, evil_bundle, tmp_path):
    b, rows = evil_bundle
    thumb = b / rows[0]["thumbnail"]
    code, out, err = run_main(capsys, "search", "--bundle", b, thumb, "-k", "3", "--min-score", "-1")
    assert code == 0
    _clean_output(out)
    assert out.count("\n") == 3 + 3  # the query, the header, three hits, the timings: no forged lines
    code, out, _ = run_main(capsys, "inspect", b)
    assert code == 0
    _clean_output(out)
    queries = tmp_path / "q.csv"
    import csv

    with open(queries, "w", newline="") as f:
        csv.writer(f).writerows([("image", "id"), (thumb, rows[0]["id"]),
                                 (thumb, "unknown" + EVIL[:9])])
    code, out, err = run_main(capsys, "eval", "--bundle", b, "--queries", queries, "--report", tmp_path / "r")
    assert code == 0, err
    _clean_output(out + err)
    report = (tmp_path / "r" / "report.md").read_text()
    assert "\x1b" not in report and "\x9b" not in report
    code, out, err = run_main(capsys, "search", "--bundle", b, "--json", thumb, "--min-score", "-1")
    assert json.loads(out)["results"][0]["id"].endswith(EVIL)  # JSON keeps the exact value, escaped by JSON


def test_tui_text_and_error_messages_escape_control_characters():
    from edge_search.core.products import Product
    from edge_search.core.search import SearchHit
    from edge_search.kiosk.tui.render import hit_lines, status_text
    from edge_search.kiosk.tui.widgets import details_text

    p = Product(id="id" + EVIL, name="name" + EVIL, keys=(0,), price=1.0, category="cat" + EVIL,
                description="d" + EVIL, meta={"k" + EVIL: "v" + EVIL})
    hit = SearchHit(id=p.id, name=p.name, score=0.9, price=1.0, category=p.category, product=p)
    for text in (hit_lines(1, hit.name, hit.price, hit.category, hit.score, 0.5).plain,
                 details_text(hit, 0.5, "original").plain, status_text(["bundle" + EVIL]).plain,
                 str(EdgeSearchError("x" + EVIL))):
        _clean_output(text)


# --- 8. manifest values checked against use ---------------------------------------------------------------------
def _edited(tiny_bundle, tmp_path, edit, name="m"):
    b = tmp_path / name
    shutil.copytree(tiny_bundle, b)
    m = json.loads((b / "manifest.json").read_text())
    edit(m)
    (b / "manifest.json").write_text(json.dumps(m))  # json writes NaN / Infinity as JavaScript does
    return b


@pytest.mark.parametrize("edit, fragment", [
    (lambda m: m["preprocess"].update(size=[32, 32]), "the model takes 3x64x64 input"),
    (lambda m: m["preprocess"].update(size=[100_000, 100_000]), "two sides of 8 to 1024 pixels"),
    (lambda m: m["preprocess"].update(size=[64.5, 64]), "whole numbers"),
    (lambda m: m["preprocess"].update(mean=[float("nan"), 0.4, 0.4]), "mean must be three numbers"),
    (lambda m: m["preprocess"].update(std=[float("inf"), 0.2, 0.2]), "std must be three numbers"),
    (lambda m: m["preprocess"].update(std=[0, 0.2, 0.2]), "std must be three numbers"),
    (lambda m: m["preprocess"].update(fill_color=1e9), "fill_color"),
    (lambda m: m["model"].update(embed_dim=-3), "embed_dim"),
    (lambda m: m["model"].update(embed_dim=32), "returns 64-d embeddings"),
    (lambda m: m.update(teacher=["x"]), "'teacher' must be a JSON object"),
    (lambda m: m.update(student="big"), "'student' must be a JSON object"),
    (lambda m: m["files"]["model.onnx"].update(bytes=-1), "byte count"),
])
def test_manifest_values_that_do_not_fit_their_use_are_one_line(capsys, tiny_bundle, tmp_path, edit, fragment):
    b = _edited(tiny_bundle, tmp_path, edit)
    img = b / json.loads((b / "products.jsonl").read_text().splitlines()[0])["thumbnail"]
    one_line(*run_main(capsys, "search", "--bundle", b, img)[::2], fragment)


def test_inspect_shows_malformed_records_in_their_place(capsys, tiny_bundle, tmp_path):
    b = _edited(tiny_bundle, tmp_path, lambda m: m.update(
        fidelity={"int8_vs_fp32": "fine", "index": {"candidates": [1, 2]}}, student={"distillation": [1]}))
    code, out, err = run_main(capsys, "inspect", b)
    assert code == 0, err
    assert "fidelity    (malformed in the manifest: fidelity.index.candidates[0] must be a JSON object, got a " \
           "number)" in out
    assert "student     (malformed in the manifest: student.distillation must be a JSON object, got a list)" in out
    assert "checksums" in out


@pytest.mark.parametrize("garbage", ["random vectors", "vectors of the next product"])
def test_install_self_test_refuses_a_bundle_that_answers_garbage(tiny_bundle, tmp_path, garbage):
    from edge_search.errors import InstallError
    from edge_search.core.index import VectorIndex
    from edge_search.core.manifest import read_manifest
    from edge_search.shipping.install import install, self_test

    _, tested = self_test(tiny_bundle)  # the real bundle passes: five distinct products found themselves
    assert tested.startswith("5 products found themselves")
    b = tmp_path / "garbage"
    shutil.copytree(tiny_bundle, b)
    m = json.loads((b / "manifest.json").read_text())
    info = read_manifest(b).index
    index = VectorIndex.open(b / info.file, info)
    vectors = np.asarray(index.index.get(np.arange(len(index), dtype=np.uint64)), np.float32)
    if garbage == "random vectors":
        vectors = np.random.default_rng(0).normal(size=vectors.shape).astype(np.float32)
    else:
        vectors = np.roll(vectors, 1, axis=0)  # every product's keys now hold another product's photo
    VectorIndex.build(vectors, dtype=info.dtype).save(b / info.file)
    _rewrite_checksums(b, m)
    with pytest.raises(InstallError, match="self-test failed"):
        install(b, tmp_path / "k")
    assert not (tmp_path / "k" / "current").exists()


# --- 9. arguments ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("args, fragment", [
    (["-k", "0"], "at least 1, got 0"), (["-k", "-3"], "at least 1, got -3"),
    (["--min-score", "nan"], "got nan"), (["--min-score", "inf"], "got inf"),
])
def test_search_and_run_refuse_bad_k_and_min_score_before_loading_anything(capsys, tmp_path, args, fragment):
    # the bundle does not exist: the arguments are refused first
    one_line(*run_main(capsys, "search", "--bundle", tmp_path / "none", "x.jpg", *args)[::2], fragment)
    one_line(*run_main(capsys, "run", "--bundle", tmp_path / "none", "--no-tui", *args)[::2], fragment)


def test_the_searcher_owns_its_query_rules():
    from edge_search.errors import QueryError
    from edge_search.kiosk.loop import KioskLoop
    from edge_search.core.search import QueryParams

    for bad in ({"k": 0}, {"k": True}, {"k": 2.5}, {"min_score": float("nan")}, {"min_score": float("inf")}):
        with pytest.raises(QueryError):
            QueryParams(**bad)
    assert QueryParams(k=3, min_score=float("-inf")).min_score == float("-inf")  # rank everything
    with pytest.raises(QueryError):  # the kiosk takes them from the same place
        KioskLoop(type("S", (), {"min_score": 0.5})(), k=3, min_score=float("nan"))


# --- 10. catalog quietly merged ----------------------------------------------------------------------------------------
def test_conflicting_duplicate_ids_are_bad_rows_and_the_first_row_wins_with_skip_bad(tmp_path):
    import cv2

    from edge_search.core.catalog import read_catalog

    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((32, 32, 3), 90, np.uint8))
    cat = tmp_path / "c.csv"
    cat.write_text("id,image,name,price\n"
                   "milk,a.jpg,Milk,1.20\n"
                   "milk,a.jpg,,\n"          # empty cells: the same product, agreeing
                   "milk,a.jpg,Milk,2.40\n"  # another price
                   "milk,a.jpg,Cream,1.20\n")  # another name
    with pytest.raises(EdgeSearchError) as e:
        read_catalog(cat)
    msg = str(e.value)
    assert "2 bad row(s)" in msg and "line 4: id 'milk' repeats with another price 2.4 (line 2 says 1.2)" in msg
    assert "line 5: id 'milk' repeats with another name 'Cream' (line 2 says 'Milk')" in msg
    kept = read_catalog(cat, skip_bad=True)
    assert [r.line for r in kept.rows] == [2, 3] and {r.price for r in kept.rows} == {1.2, None}
    assert len(kept.skipped) == 2


@pytest.mark.parametrize("pid", ["a\x00b", "a\x1b[2Jb", "tab\there", "\x9bx"])
def test_control_characters_in_ids_are_refused(tmp_path, pid):
    import csv

    import cv2

    from edge_search.core.catalog import read_catalog

    cv2.imwrite(str(tmp_path / "a.jpg"), np.full((32, 32, 3), 90, np.uint8))
    cat = tmp_path / "c.jsonl"
    cat.write_text(json.dumps({"id": pid, "image": "a.jpg"}) + "\n" + json.dumps({"id": "ok", "image": "a.jpg"}) + "\n")
    with pytest.raises(EdgeSearchError, match="line 1: id .* holds control characters") as e:
        read_catalog(cat)
    assert "\x00" not in str(e.value) and "\x1b" not in str(e.value)
    assert [r.id for r in read_catalog(cat, skip_bad=True).rows] == ["ok"]
    with open(tmp_path / "c.csv", "w", newline="") as f:
        csv.writer(f).writerows([("id", "image"), (pid, "a.jpg")])
    with pytest.raises(EdgeSearchError, match="holds control characters"):
        read_catalog(tmp_path / "c.csv")
