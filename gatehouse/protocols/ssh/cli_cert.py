"""
C{gatehouse ssh-cert}: exchange a token for a short-lived SSH certificate.

    gatehouse ssh-cert --gateway https://gw.example.com:8443 \\
        [--token-file FILE] [--out ~/.ssh/gatehouse] [--target web-1 ...] \\
        [--lifetime 30m] [--ca-file CA.pem] [--ssh-port 2222]

A new Ed25519 key pair is made here; only its public half goes to the
gateway's admin API (C{POST /api/v1/ssh/certificates}), which answers with a
certificate signed by the gateway's SSH user CA for the token's identity.
Written: C{OUT} (the private key, mode 0600), C{OUT.pub} and
C{OUT-cert.pub}, where C{ssh -i OUT} finds the certificate by itself.

The token comes from C{--token-file}, else the environment
(C{GATEHOUSE_TOKEN}, the token itself, or C{GATEHOUSE_TOKEN_FILE}); the
gateway's admin URL from C{--gateway}, C{GATEHOUSE_ADMIN_URL} or the
gateway's configuration (C{--config}), as for C{gatehouse approvals}.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from gatehouse._duration import format_duration, parse_duration
from gatehouse.cli import CommandError, Handler
from gatehouse.cli_approvals import _Client, _connection, _token

__all__ = ["CERTIFICATE_PATH", "DEFAULT_OUT", "configure"]

DEFAULT_OUT = "~/.ssh/gatehouse"
#: what follows the key's path in the certificate's (OpenSSH's convention)
CERTIFICATE_PATH = "-cert.pub"


def configure(parser: argparse.ArgumentParser) -> Handler:
    """Set up C{gatehouse ssh-cert}."""
    parser.description = (
        "Exchange your token for a short-lived SSH certificate signed by the "
        "gateway's user CA; write a new key pair and the certificate where "
        "ssh -i finds them."
    )
    parser.add_argument(
        "--gateway",
        "--url",
        dest="url",
        metavar="URL",
        help="the gateway's admin API (default: $GATEHOUSE_ADMIN_URL, the "
        "configuration's admin listener, else http://127.0.0.1:8080)",
    )
    parser.add_argument(
        "--ca-file",
        metavar="FILE",
        help="CA certificates that verify an https:// admin API",
    )
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="the gateway's configuration file, to find its admin API",
    )
    parser.add_argument(
        "--token-file",
        metavar="FILE",
        help="a file holding your token (default: $GATEHOUSE_TOKEN or "
        "$GATEHOUSE_TOKEN_FILE)",
    )
    parser.add_argument(
        "--out",
        "-o",
        default=DEFAULT_OUT,
        metavar="PATH",
        help=f"the private key's path; also PATH.pub and PATH{CERTIFICATE_PATH} "
        f"(default: {DEFAULT_OUT})",
    )
    parser.add_argument(
        "--target",
        "-t",
        dest="targets",
        action="append",
        metavar="TARGET",
        help="an SSH target the certificate is for (again for more; "
        "default: every target you may reach)",
    )
    parser.add_argument(
        "--lifetime",
        metavar="DURATION",
        help="how long the certificate is valid, e.g. 30m (default and "
        "maximum: the gateway's; never past the token's expiry)",
    )
    parser.add_argument(
        "--ssh-port",
        type=int,
        metavar="PORT",
        help="the gateway's SSH port, for the ssh line printed",
    )
    return _run


def _run(args: argparse.Namespace) -> int:
    body: dict[str, Any] = {}
    if args.lifetime is not None:
        try:
            if parse_duration(args.lifetime) <= 0:
                raise ValueError("must be more than 0")
        except ValueError as e:
            raise CommandError(f"--lifetime: {e}")
        body["lifetime"] = args.lifetime
    if args.targets:
        body["principals"] = list(dict.fromkeys(args.targets))
    out = os.path.abspath(os.path.expanduser(args.out))
    directory = os.path.dirname(out)
    if args.out == DEFAULT_OUT and not os.path.exists(directory):
        # A fresh account (an agent's container) has no ~/.ssh yet.
        os.makedirs(directory, mode=0o700)
    if not os.path.isdir(directory):
        raise CommandError(f"{directory} is not a directory")
    token = _token(args)
    url, ca_file = _connection(args)
    client = _Client(url, token, ca_file)
    key = ed25519.Ed25519PrivateKey.generate()
    public = key.public_key().public_bytes(
        serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
    )
    body["public_key"] = public.decode("ascii")
    answer = client.call("POST", "/api/v1/ssh/certificates", body)
    certificate = answer.get("certificate")
    principals = answer.get("principals")
    valid_before = answer.get("valid_before")
    if (
        not isinstance(certificate, str)
        or not isinstance(principals, list)
        or not isinstance(valid_before, int)
    ):
        raise CommandError(f"{url} did not answer with a certificate")
    _check_certificate(certificate, public, url)
    private = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption(),
    )
    _write(out, private, 0o600)
    _write(out + ".pub", public + b" gatehouse\n", 0o644)
    _write(out + CERTIFICATE_PATH, certificate.encode("ascii") + b"\n", 0o644)
    left = format_duration(max(0.0, valid_before - time.time()))
    until = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(valid_before))
    print(f"wrote {out}, {out}.pub and {out}{CERTIFICATE_PATH}")
    print(f"certificate valid until {until} (in {left}) for: {', '.join(principals)}")
    host = urlsplit(url).hostname or "GATEWAY"
    port = f"-p {args.ssh_port} " if args.ssh_port else ""
    shown = out.replace(os.path.expanduser("~"), "~", 1)
    print(f"log in with: ssh -i {shown} {port}{principals[0]}@{host}")
    return 0


def _check_certificate(line: str, public: bytes, url: str) -> None:
    """The answer must certify the key just made (never write another)."""
    try:
        cert = serialization.load_ssh_public_identity(line.encode("ascii"))
    except (ValueError, UnicodeEncodeError) as e:
        raise CommandError(f"{url} answered with an unreadable certificate: {e}")
    if (
        not isinstance(cert, serialization.SSHCertificate)
        or cert.public_key().public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        != public
    ):
        raise CommandError(f"{url} answered with a certificate for another key")


def _write(path: str, data: bytes, mode: int) -> None:
    """Replace C{path} with C{data} at once, created with C{mode}."""
    directory, name = os.path.split(path)
    fd, temporary = tempfile.mkstemp(prefix=f".{name}.", dir=directory)
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.replace(temporary, path)
    except BaseException:
        os.unlink(temporary)
        raise
