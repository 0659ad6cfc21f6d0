"""`edge-search keygen / sign / verify / pack / install / rollback`: getting bundles to devices."""

from __future__ import annotations

import argparse
from pathlib import Path

from edge_search.cli.output import add_trusted_key, say, trusted_key


def run_keygen(args: argparse.Namespace) -> int:
    from edge_search.core.signing import keygen

    private, public = keygen(Path(args.out), name=args.name)
    say(f"private key {private} (keep it secret: it signs bundles)")
    say(f"public key  {public} (give it to devices: --trusted-key or "
          f"~/.config/edge-search/trusted.pub.pem)")
    return 0


def run_sign(args: argparse.Namespace) -> int:
    from edge_search.core.bundle import Bundle
    from edge_search.core.signing import sign_bundle

    Bundle.open(args.bundle, verify=True)  # never sign a bundle whose files do not match its manifest
    sig = sign_bundle(Path(args.bundle), Path(args.key))
    say(f"signed {args.bundle}: {sig}")
    return 0


def run_verify(args: argparse.Namespace) -> int:
    from edge_search.core.bundle import Bundle
    from edge_search.errors import TrustError

    key = trusted_key(args)
    if key is None:
        raise TrustError("verify needs a public key: --trusted-key PUB (or $EDGE_SEARCH_TRUSTED_KEY, "
                         "or ~/.config/edge-search/trusted.pub.pem)")
    bundle = Bundle.open(args.bundle, verify=True, trusted_key=key)
    say(f"ok: {bundle.root} ({bundle.manifest.name}): signature by {key} valid, "
          f"{len(bundle.file_names())} files match their checksums")
    return 0


def run_pack(args: argparse.Namespace) -> int:
    from edge_search.shipping.pack import pack

    out = pack(Path(args.bundle), Path(args.out), trusted_key=trusted_key(args),
               base=Path(args.base) if args.base else None)
    kind = f"a delta on {args.base}" if args.base else "the whole bundle"
    say(f"wrote {out} ({out.stat().st_size / 1e6:.2f} MB, {kind})")
    return 0


def run_install(args: argparse.Namespace) -> int:
    from edge_search.shipping.install import install

    key = trusted_key(args)
    report = install(Path(args.source), Path(args.into), trusted_key=key)
    if report.already_current:
        say(f"already active: {report.path} (self-test: {report.self_test})")
        return 0
    signed = f"signature checked against {key}" if key else "no trusted key configured: signature not checked"
    say(f"installed {report.name} -> {Path(args.into) / 'current'} ({signed}; self-test: {report.self_test}; "
          f"{report.seconds:.1f} s)")
    if report.from_base:
        say(f"a delta: {report.from_base} unchanged file(s) taken from the previous bundle, every file verified")
    if report.thread_p50:
        timed = ", ".join(f"{n} thread{'s' if n > 1 else ''} {ms:.2f} ms" for n, ms in report.thread_p50.items())
        chose = (f"runs at {report.threads}" if report.threads else
                 "not recorded (the cache folder cannot be written): runs at the default")
        say(f"image model on this device, p50: {timed}; {chose}")
    if report.previous:
        say(f"previous: {report.previous} (edge-search rollback --into {args.into})")
    return 0


def run_rollback(args: argparse.Namespace) -> int:
    from edge_search.shipping.install import rollback

    now, before = rollback(Path(args.into), trusted_key=trusted_key(args))
    say(f"current -> {now} (was {before})")
    return 0


def add_parsers(sub) -> None:
    g = sub.add_parser("keygen", help="make an Ed25519 key pair for signing bundles")
    g.add_argument("--out", required=True, metavar="DIR", help="folder for NAME.key.pem and NAME.pub.pem")
    g.add_argument("--name", default="edge-search", help="file name stem (default edge-search)")
    g.set_defaults(func=run_keygen)

    sg = sub.add_parser("sign", help="sign an existing bundle's manifest (writes manifest.sig)")
    sg.add_argument("bundle")
    sg.add_argument("--key", required=True, help="Ed25519 private key (NAME.key.pem)")
    sg.set_defaults(func=run_sign)

    vf = sub.add_parser("verify", help="check a bundle's signature and every checksum")
    vf.add_argument("bundle")
    add_trusted_key(vf)
    vf.set_defaults(func=run_verify)

    pk = sub.add_parser("pack", help="write a bundle as one file for shipping (.tar, or .tar.gz)")
    pk.add_argument("bundle")
    pk.add_argument("--out", required=True, metavar="FILE")
    pk.add_argument("--base", default=None, metavar="BUNDLE",
                    help="write a delta: only what a device holding BUNDLE (the bundle this one was built on with "
                         "export --base) lacks")
    add_trusted_key(pk)
    pk.set_defaults(func=run_pack)

    ins = sub.add_parser("install", help="verify a packed bundle (or folder) and make it DIR/current atomically")
    ins.add_argument("source", metavar="FILE_OR_DIR")
    ins.add_argument("--into", required=True, metavar="DIR", help="install folder: DIR/current, DIR/previous")
    add_trusted_key(ins)
    ins.set_defaults(func=run_install)

    rb = sub.add_parser("rollback", help="switch DIR/current back to DIR/previous")
    rb.add_argument("--into", required=True, metavar="DIR")
    add_trusted_key(rb)
    rb.set_defaults(func=run_rollback)
