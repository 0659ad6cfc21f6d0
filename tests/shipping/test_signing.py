"""Signed bundles: keygen, sign, verify, and refusing untrusted bundles in
search, eval and run (flag, environment variable, config file)."""

from __future__ import annotations

import shutil
import stat

import pytest

from conftest import one_line_error, run_cli

@pytest.fixture(scope="module")
def keys(tmp_path_factory):
    d = tmp_path_factory.mktemp("keys")
    run_cli("keygen", "--out", d)
    run_cli("keygen", "--out", d, "--name", "other")
    return d


@pytest.fixture
def signed(tiny_bundle, tmp_path, keys):
    dst = tmp_path / "signed"
    shutil.copytree(tiny_bundle, dst)
    run_cli("sign", dst, "--key", keys / "edge-search.key.pem")
    return dst


def test_keygen_writes_a_private_key_only_its_owner_reads_and_never_overwrites(keys):
    private, public = keys / "edge-search.key.pem", keys / "edge-search.pub.pem"
    assert stat.S_IMODE(private.stat().st_mode) == 0o600
    assert b"PRIVATE KEY" in private.read_bytes() and b"PUBLIC KEY" in public.read_bytes()
    before = private.read_bytes()
    one_line_error(run_cli("keygen", "--out", keys, check=False), "already exists")
    assert private.read_bytes() == before


def test_verify_accepts_the_signer_and_refuses_another_key(signed, keys):
    out = run_cli("verify", signed, "--trusted-key", keys / "edge-search.pub.pem").stdout
    assert out.startswith("ok:") and "files match" in out
    one_line_error(run_cli("verify", signed, "--trusted-key", keys / "other.pub.pem", check=False),
                   "manifest.sig", "does not match the trusted key")
    one_line_error(run_cli("verify", signed, check=False), "needs a public key")


def test_a_changed_manifest_or_file_fails_verification(signed, keys):
    pub = keys / "edge-search.pub.pem"
    m = signed / "manifest.json"
    m.write_bytes(m.read_bytes().replace(b'"name": "', b'"name": "X', 1))
    one_line_error(run_cli("verify", signed, "--trusted-key", pub, check=False), "does not match")
    # signature over the restored manifest holds, but a file no longer matches its checksum
    m.write_bytes(m.read_bytes().replace(b'"name": "X', b'"name": "', 1))
    run_cli("verify", signed, "--trusted-key", pub)
    (signed / "products.jsonl").write_bytes((signed / "products.jsonl").read_bytes() + b" ")
    one_line_error(run_cli("verify", signed, "--trusted-key", pub, check=False), "products.jsonl")


def test_search_eval_and_run_refuse_unsigned_or_wrongly_signed_bundles(signed, tiny_bundle, keys, sample_catalog,
                                                                        tmp_path):
    img = sample_catalog.parent / "images" / "honey.jpg"
    pub, other = keys / "edge-search.pub.pem", keys / "other.pub.pem"
    queries = tmp_path / "q.csv"
    queries.write_text(f"image,id\n{img},honey\n")
    ok = run_cli("search", "--bundle", signed, "--trusted-key", pub, img, "--json").stdout
    assert '"honey"' in ok
    for cmd in (["search", "--bundle", tiny_bundle, img], ["eval", "--bundle", tiny_bundle, "--queries", queries],
                ["run", "--bundle", tiny_bundle, "--no-tui", "--source", sample_catalog.parent / "images"]):
        one_line_error(run_cli(*cmd, "--trusted-key", pub, check=False), "not signed")
    for cmd in (["search", "--bundle", signed, img], ["eval", "--bundle", signed, "--queries", queries],
                ["run", "--bundle", signed, "--no-tui", "--source", sample_catalog.parent / "images"]):
        one_line_error(run_cli(*cmd, "--trusted-key", other, check=False), "does not match the trusted key")
    # no key configured: an unsigned bundle is used as before
    assert '"honey"' in run_cli("search", "--bundle", tiny_bundle, img, "--json").stdout


def test_kiosk_key_from_environment_and_config_file(signed, tiny_bundle, keys, sample_catalog, tmp_path):
    img = sample_catalog.parent / "images" / "honey.jpg"
    env = {"EDGE_SEARCH_TRUSTED_KEY": str(keys / "edge-search.pub.pem")}
    one_line_error(run_cli("search", "--bundle", tiny_bundle, img, env=env, check=False), "not signed")
    run_cli("search", "--bundle", signed, img, env=env)
    config = tmp_path / "xdg"
    (config / "edge-search").mkdir(parents=True)
    shutil.copy(keys / "other.pub.pem", config / "edge-search" / "trusted.pub.pem")
    one_line_error(run_cli("search", "--bundle", signed, img, env={"XDG_CONFIG_HOME": str(config)}, check=False),
                   "does not match")
    # the flag wins over the config file
    run_cli("search", "--bundle", signed, img, "--trusted-key", keys / "edge-search.pub.pem",
            env={"XDG_CONFIG_HOME": str(config)})


def test_bad_key_files_are_one_line_errors(tiny_bundle, keys, tmp_path):
    copy = tmp_path / "b"
    shutil.copytree(tiny_bundle, copy)
    one_line_error(run_cli("sign", copy, "--key", keys / "edge-search.pub.pem", check=False), "not a PEM private key")
    (tmp_path / "junk.pem").write_text("hello")
    one_line_error(run_cli("verify", copy, "--trusted-key", tmp_path / "junk.pem", check=False), "junk.pem")
    one_line_error(run_cli("verify", copy, "--trusted-key", tmp_path / "none.pem", check=False), "none.pem: no such file")
    assert not (copy / "manifest.sig").exists()
