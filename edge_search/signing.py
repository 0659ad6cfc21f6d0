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

from .errors import SignatureError, TrustError
from .files import atomic_write_bytes
from .manifest import MANIFEST_NAME

SIGNATURE_NAME = "manifest.sig"
TRUSTED_KEY_ENV = "EDGE_SEARCH_TRUSTED_KEY"
TRUSTED_KEY_FILE = "trusted.pub.pem"  # under $XDG_CONFIG_HOME/edge-search/


def config_dir() -> Path:
    base = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(base) / "edge-search"


def resolve_trusted_key(flag: str | Path | None = None) -> Path | None:
    """The public key this device trusts: `--trusted-key`, else $EDGE_SEARCH_TRUSTED_KEY,
    else $XDG_CONFIG_HOME/edge-search/trusted.pub.pem if it exists; None when none is configured."""
    if flag:
        return Path(flag)
    env = os.environ.get(TRUSTED_KEY_ENV)
    if env:
        return Path(env)
    default = config_dir() / TRUSTED_KEY_FILE
    return default if default.exists() else None


def keygen(out_dir: str | Path, name: str = "edge-search") -> tuple[Path, Path]:
    """Write a new Ed25519 key pair: NAME.key.pem (private, mode 0600) and NAME.pub.pem."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    out = Path(out_dir)
    private, public = out / f"{name}.key.pem", out / f"{name}.pub.pem"
    for p in (private, public):
        if p.exists():
            raise TrustError(f"{p}: already exists (keys are never overwritten; choose another --out or --name)")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise TrustError(f"{out}: cannot create folder ({e.strerror or e})") from None
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    pub = key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    # the private key is created owner-only, never briefly readable by others
    fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    atomic_write_bytes(public, pub)
    os.chmod(public, 0o644)
    return private, public


def _read_key(path: Path, kind: str):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise TrustError(f"{path}: no such key file") from None
    except OSError as e:
        raise TrustError(f"{path}: cannot read key ({e.strerror or e})") from None
    try:
        if kind == "private":
            key = serialization.load_pem_private_key(data, password=None)
            want = Ed25519PrivateKey
        else:
            key = serialization.load_pem_public_key(data)
            want = Ed25519PublicKey
    except (ValueError, TypeError) as e:
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
    try:
        data = (root / MANIFEST_NAME).read_bytes()
    except OSError as e:
        raise SignatureError(f"{root / MANIFEST_NAME}: cannot read ({e.strerror or e})") from None
    sig = root / SIGNATURE_NAME
    atomic_write_bytes(sig, base64.b64encode(key.sign(data)) + b"\n")
    os.chmod(sig, 0o644)
    return sig


def verify_signature(bundle_dir: str | Path, manifest_bytes: bytes, key_path: str | Path) -> None:
    """Raise SignatureError unless manifest.sig is a valid signature of `manifest_bytes` by the key."""
    from cryptography.exceptions import InvalidSignature

    key = _read_key(Path(key_path), "public")
    sig_path = Path(bundle_dir) / SIGNATURE_NAME
    try:
        text = sig_path.read_bytes()
    except FileNotFoundError:
        raise SignatureError(f"{bundle_dir}: bundle is not signed (no {SIGNATURE_NAME}) and a trusted key "
                             f"is configured ({key_path})") from None
    except OSError as e:
        raise SignatureError(f"{sig_path}: cannot read ({e.strerror or e})") from None
    try:
        sig = base64.b64decode(text.strip(), validate=True)
    except ValueError:
        raise SignatureError(f"{sig_path}: not a signature (expected one base64 line)") from None
    try:
        key.verify(sig, manifest_bytes)
    except InvalidSignature:
        raise SignatureError(f"{sig_path}: signature does not match the trusted key {key_path} "
                             "(signed by another key, or manifest.json changed after signing)") from None
