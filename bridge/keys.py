"""``busbridge keys generate --dir D [--name N] [--force]``: a ZMQ CURVE key pair for ``zmq.curve``.

Writes ``D/N.key`` (public certificate) and ``D/N.key_secret`` (secret
certificate, mode 0600) in the zmq.auth format, and prints where each goes:
for the bridge, ``N.key_secret`` is ``zmq.curve.server_secret_key_file`` and
``N.key`` (or the printed Z85 key) goes to the publishers; for a publisher,
its ``N.key`` goes into the bridge's ``zmq.curve.allowed_clients_dir`` (or its
key into ``allowed_client_keys``) and ``N.key_secret`` stays with it. Secret
keys are never printed. Exit status 1 when a file exists (without ``--force``)
or the directory cannot be written.
"""

from __future__ import annotations

import argparse

__all__ = ["add_arguments", "run_keys"]


def add_arguments(p: argparse.ArgumentParser) -> None:
    actions = p.add_subparsers(dest="keys_command", required=True)
    gen = actions.add_parser(
        "generate", help="write <name>.key (public) and <name>.key_secret (secret, 0600)"
    )
    gen.add_argument(
        "--dir", required=True, help="directory for the key files (created 0700 if missing)"
    )
    gen.add_argument("--name", default="busbridge", help="file base name (default: busbridge)")
    gen.add_argument("--force", action="store_true", help="overwrite existing files")
    gen.set_defaults(func=run_keys)


def run_keys(args: argparse.Namespace) -> int:
    from bridge.adapters.zmq_curve import generate_keypair

    public, secret, public_z85 = generate_keypair(args.dir, args.name, force=args.force)
    print(f"public key (Z85): {public_z85}")
    print(
        f"  {public}  public certificate: to publishers (server key) or to allowed_clients_dir (client key)"
    )
    print(
        f"  {secret}  secret certificate (0600): zmq.curve.server_secret_key_file, or the publisher's own key"
    )
    return 0
