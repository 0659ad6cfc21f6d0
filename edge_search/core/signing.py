"""Signed bundles: Ed25519 keys, `manifest.sig`, and which key a device trusts.

The manifest holds every file's size and sha256, so a signature over the
exact bytes of `manifest.json` covers the whole bundle. A device that has a
trusted public key refuses a bundle that is unsigned or signed by another
key. Owns key files and the trusted-key lookup (flag, environment variable,
config file). Must not import torch, open_clip or onnx.
"""

from __future__ import annotations

import base64
import os
from pathlib import Path

from edge_search.errors import SignatureError, TrustError
from edge_search.files import (MAX_KEY_BYTES, MAX_SIGNATURE_BYTES, atomic_write_bytes, check_output, ensure_folder, plain_name,
                    read_regular)
from edge_search.core.manifest import read_manifest_bytes

SIGNATURE_NAME = "manifest.sig"
TRUSTED_KEY_ENV = "EDGE_SEARCH_TRUSTED_KEY"
TRUSTED_KEY_FILE = "trusted.pub.pem"  # under $XDG_CONFIG_HOME/edge-search/


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edge-search"


def default_trusted_key_path() -> Path:
    """Where a device's trusted public key lives when neither the flag nor the variable names one."""
    return config_dir() / TRUSTED_KEY_FILE


def resolve_trusted_key(flag: str | Path | None = None) -> Path | None:
    """The public key this device trusts: `--trusted-key`, else $EDGE_SEARCH_TRUSTED_KEY,
    else $XDG_CONFIG_HOME/edge-search/trusted.pub.pem if anything is there; None when none is configured.

    Fails closed: a key that is configured but unusable (an empty flag or
    variable, a dangling symlink or a folder at the default path, a config
    folder we may not look into) is a TrustError, never "no key"."""
    if flag is not None:
        if not str(flag).strip():
            raise TrustError("--trusted-key is empty: name the public key file (or leave the flag out)")
        return Path(flag)
    env = os.environ.get(TRUSTED_KEY_ENV)
    if env is not None:
        if not env.strip():
            raise TrustError(f"${TRUSTED_KEY_ENV} is set but empty: name the public key file (or unset it)")
        return Path(env)
    default = default_trusted_key_path()
    try:
        os.lstat(default)  # a dangling link or a loop counts as configured: reading it then fails, in one line
    except (FileNotFoundError, NotADirectoryError):
        return None
    except OSError as e:
        raise TrustError(f"{default}: cannot tell whether a trusted key is configured "
                         f"({e.strerror or e}); refusing to go on without checking signatures") from None
    return default


def keygen(out_dir: str | Path, name: str = "edge-search") -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: NAME.key.pem (private, mode 0600) and NAME.pub.pem.

    NAME is a plain file name (never a path out of the folder); both files are
    written whole or not at all and never replace an existing file, so a full
    disk leaves no empty key behind and a retry simply works."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    plain_name(name, "--name", TrustError)
    out = check_output(out_dir, folder=True, flag="--out", error=TrustError)
    private, public = out / f"{name}.key.pem", out / f"{name}.pub.pem"
    for p in (private, public):
        if os.path.lexists(p):
            raise TrustError(f"{p}: already exists (keys are never overwritten; choose another --out or --name)")
    ensure_folder(out, "--out", TrustError)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    # the private key's temp file is created owner-only (mkstemp), never briefly readable by others
    atomic_write_bytes(private, pem, mode=0o600, overwrite=False, error=TrustError)
    try:
        atomic_write_bytes(public, pub, mode=0o644, overwrite=False, error=TrustError)
    except BaseException:
        private.unlink()  # half a pair is no use, and would block the retry
        raise
    return private, public


def _read_key(path: Path, kind: str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    path = Path(path)
    data = read_regular(path, limit=MAX_KEY_BYTES, what="key file", error=TrustError)
    try:
        if kind == "private":
            key = serialization.load_pem_private_key(data, password=None)
            want = Ed25519PrivateKey
        else:
            key = serialization.load_pem_public_key(data)
            want = Ed25519PublicKey
    except (ValueError, TypeError):
        hint = " (is this the .pub.pem file?)" if kind == "private" else " (is this the private key?)"
        raise TrustError(f"{path}: not a PEM {kind} key{hint}") from None
    except Exception as e:  # cryptography raises its own types for unsupported keys
        raise TrustError(f"{path}: unusable {kind} key ({type(e).__name__})") from None
    if not isinstance(key, want):
        raise TrustError(f"{path}: not an Ed25519 {kind} key")
    return key


def check_private_key(path: str | Path) -> None:
    """Raise TrustError unless `path` is a readable Ed25519 private key."""
    _read_key(Path(path), "private")


def sign_bundle(bundle_dir: str | Path, key_path: str | Path) -> Path:
    """Sign the bundle's manifest.json bytes; writes manifest.sig atomically."""
    key = _read_key(Path(key_path), "private")
    root = Path(bundle_dir)
    data = read_manifest_bytes(root)
    sig = root / SIGNATURE_NAME
    atomic_write_bytes(sig, base64.b64encode(key.sign(data)) + b"\n")
    return sig


def verify_signature(bundle_dir: str | Path, manifest_bytes: bytes, key_path: str | Path) -> None:
    """Raise SignatureError unless manifest.sig is a valid signature of `manifest_bytes` by the key."""
    key_path = Path(key_path)
    _read_key(key_path, "public")  # a broken key is named before a missing signature
    sig_path = Path(bundle_dir) / SIGNATURE_NAME
    if not os.path.lexists(sig_path):
        raise SignatureError(f"{bundle_dir}: bundle is not signed (no {SIGNATURE_NAME}) and a trusted key "
                             f"is configured ({key_path})")
    text = read_regular(sig_path, limit=MAX_SIGNATURE_BYTES, what="signature", error=SignatureError)
    verify_signature_bytes(manifest_bytes, text, key_path, str(sig_path))


def verify_signature_bytes(manifest_bytes: bytes, sig_text: bytes, key_path: str | Path, where: str) -> None:
    """Raise SignatureError unless `sig_text` (manifest.sig's bytes) signs `manifest_bytes` with the key."""
    from cryptography.exceptions import InvalidSignature

    key = _read_key(Path(key_path), "public")
    try:
        sig = base64.b64decode(sig_text.strip(), validate=True)
    except ValueError:
        raise SignatureError(f"{where}: not a signature (expected one base64 line)") from None
    try:
        key.verify(sig, manifest_bytes)
    except InvalidSignature:
        raise SignatureError(f"{where}: signature does not match the trusted key {key_path} "
                             "(signed by another key, or manifest.json changed after signing)") from None
