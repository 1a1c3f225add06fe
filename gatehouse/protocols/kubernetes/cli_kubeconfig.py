"""
C{gatehouse kubeconfig} and C{gatehouse token}: kubectl through gatehouse.

    gatehouse kubeconfig --target prod --server https://gw.example.com:6443 \\
        [--ca FILE] [--token-file FILE | --token-env NAME | --token TOKEN] \\
        [--output FILE] [--context NAME] [--namespace NS]

writes a kubeconfig (YAML; mode 0600 when written to a file, else printed)
whose cluster is C{SERVER/targets/TARGET}: the gateway reads the target
from that path prefix.  The gateway's certificate is verified with the CA
certificates of C{--ca} (embedded as C{certificate-authority-data}), else
with the system's trust store.

The user is, by default, an exec credential plugin: kubectl runs
C{gatehouse token} (with C{--file FILE} or C{--env NAME} when given) before
its requests and sends the token it prints as C{Authorization: Bearer}.
The token then never sits in the kubeconfig, and a renewed token file is
picked up by the next kubectl.  The plugin's command is the absolute path
of the C{gatehouse} script that wrote the kubeconfig when it is known (so
that kubectl finds it whatever its C{PATH}), else C{gatehouse} found on
C{PATH}.  C{--token TOKEN} instead writes the token itself into the
kubeconfig (for machines without gatehouse installed).

    gatehouse token [--file FILE | --env NAME]

prints an C{ExecCredential} (C{client.authentication.k8s.io/v1}) with the
token from C{FILE}, the environment variable C{NAME}, or by default
C{$GATEHOUSE_TOKEN} (the token) or C{$GATEHOUSE_TOKEN_FILE} (a file holding
it).  Its C{expirationTimestamp} is the token's C{exp} claim, read WITHOUT
verifying the token's signature: only the gateway can verify it, and the
value only tells kubectl when to ask again.  A token that is missing,
unreadable, not a JWT or already expired is an error (exit status 1, the
reason on stderr) and kubectl reports that the plugin failed.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Any
from urllib.parse import urlsplit

from gatehouse.cli import CommandError, Handler

__all__ = [
    "EXEC_API_VERSION",
    "configure_kubeconfig",
    "configure_token",
    "exec_credential",
    "kubeconfig",
]

EXEC_API_VERSION = "client.authentication.k8s.io/v1"
#: Target names as the configuration allows them (gatehouse.config.load);
#: "." and ".." would be path segments of their own.
_TARGET = re.compile(r"(?!\.{1,2}\Z)[A-Za-z0-9._-]{1,64}\Z")
#: Kubernetes namespaces are DNS labels.
_NAMESPACE = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?\Z")
_INSTALL_HINT = (
    "kubectl runs gatehouse to get your token: install gatehouse, or write "
    "the kubeconfig again with gatehouse kubeconfig"
)


# -- gatehouse kubeconfig -----------------------------------------------------


def configure_kubeconfig(parser: argparse.ArgumentParser) -> Handler:
    """Set up C{gatehouse kubeconfig}."""
    parser.description = (
        "Write a kubeconfig with which kubectl reaches a Kubernetes target "
        "through the gateway, authenticated by your token."
    )
    parser.add_argument(
        "--target", "-t", required=True, help="the gateway's Kubernetes target"
    )
    parser.add_argument(
        "--server",
        required=True,
        metavar="URL",
        help="the gateway's Kubernetes listener, e.g. https://gw.example.com:6443",
    )
    parser.add_argument(
        "--ca",
        metavar="FILE",
        help="CA certificates (PEM) that verify the gateway (default: the "
        "system's trust store)",
    )
    tokens = parser.add_mutually_exclusive_group()
    tokens.add_argument(
        "--token-file",
        metavar="FILE",
        help="kubectl runs 'gatehouse token --file FILE' for the token",
    )
    tokens.add_argument(
        "--token-env",
        metavar="NAME",
        help="kubectl runs 'gatehouse token --env NAME' for the token",
    )
    tokens.add_argument(
        "--token",
        metavar="TOKEN",
        help="write this token into the kubeconfig instead (static; default: "
        "kubectl runs 'gatehouse token', which reads $GATEHOUSE_TOKEN or "
        "$GATEHOUSE_TOKEN_FILE)",
    )
    parser.add_argument(
        "--output",
        "-o",
        metavar="FILE",
        help="write the kubeconfig here, mode 0600 (default: print it)",
    )
    parser.add_argument(
        "--context",
        metavar="NAME",
        help="the context's name (default: gatehouse-TARGET)",
    )
    parser.add_argument("--namespace", "-n", metavar="NS", help="the default namespace")
    return _run_kubeconfig


def kubeconfig(
    *,
    target: str,
    server: str,
    ca_pem: bytes | None = None,
    user: dict[str, Any],
    context: str | None = None,
    namespace: str | None = None,
) -> dict[str, Any]:
    """
    Return the kubeconfig (as data) for C{target} behind the gateway at
    C{server}, with C{user} as the user's entry (C{{"token": ...}} or
    C{{"exec": ...}}).

    @raise CommandError: A value kubectl or the gateway would not take.
    """
    if not _TARGET.match(target):
        raise CommandError(
            f"{target!r} is not a target name (1 to 64 of A-Z a-z 0-9 . _ -)"
        )
    if namespace is not None and not _NAMESPACE.match(namespace):
        raise CommandError(f"{namespace!r} is not a namespace name")
    parts = urlsplit(server)
    if parts.scheme != "https" or not parts.hostname:
        # A bearer token must not cross in clear.
        raise CommandError(f"--server {server!r}: an https:// URL is needed")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise CommandError(
            f"--server {server!r}: give scheme, host, port and path only"
        )
    name = f"gatehouse-{target}"
    context = context or name
    cluster: dict[str, Any] = {"server": f"{server.rstrip('/')}/targets/{target}"}
    if ca_pem is not None:
        cluster["certificate-authority-data"] = base64.b64encode(ca_pem).decode()
    context_entry: dict[str, Any] = {"cluster": name, "user": name}
    if namespace:
        context_entry["namespace"] = namespace
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": name, "cluster": cluster}],
        "users": [{"name": name, "user": user}],
        "contexts": [{"name": context, "context": context_entry}],
        "current-context": context,
        "preferences": {},
    }


def _run_kubeconfig(args: argparse.Namespace) -> int:
    import yaml

    ca_pem = None if args.ca is None else _read_ca(args.ca)
    if args.token is not None:
        user: dict[str, Any] = {"token": _checked(args.token, "--token")}
    else:
        token_args = ["token"]
        if args.token_file is not None:
            token_args += ["--file", os.path.abspath(args.token_file)]
        elif args.token_env is not None:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", args.token_env):
                raise CommandError(
                    f"--token-env {args.token_env!r}: not a variable name"
                )
            token_args += ["--env", args.token_env]
        user = {
            "exec": {
                "apiVersion": EXEC_API_VERSION,
                "command": _gatehouse_command(),
                "args": token_args,
                "interactiveMode": "Never",
                "provideClusterInfo": False,
                "installHint": _INSTALL_HINT,
            }
        }
    config = kubeconfig(
        target=args.target,
        server=args.server,
        ca_pem=ca_pem,
        user=user,
        context=args.context,
        namespace=args.namespace,
    )
    text = yaml.safe_dump(config, sort_keys=False, default_flow_style=False)
    if args.output is None:
        sys.stdout.write(text)
        return 0
    _write_private(args.output, text.encode("utf-8"))
    print(f"wrote {args.output}: use it with kubectl --kubeconfig {args.output}")
    return 0


def _read_ca(path: str) -> bytes:
    from cryptography import x509

    with open(path, "rb") as f:
        pem = f.read()
    try:
        x509.load_pem_x509_certificates(pem)
    except ValueError as e:
        raise CommandError(f"{path}: no PEM certificates ({e})")
    return pem


def _gatehouse_command() -> str:
    """The absolute path of the running gatehouse script, else the one on PATH."""
    script = sys.argv[0] if sys.argv else ""
    if os.path.basename(script) == "gatehouse" and os.path.isfile(script):
        return os.path.abspath(script)
    return shutil.which("gatehouse") or "gatehouse"


def _write_private(path: str, data: bytes) -> None:
    """Replace C{path} by C{data} at once, readable by its owner only."""
    directory = os.path.dirname(os.path.abspath(path))
    with tempfile.NamedTemporaryFile(
        dir=directory, prefix=".kubeconfig.", delete=False
    ) as f:
        # NamedTemporaryFile creates the file 0600.
        try:
            f.write(data)
            f.flush()
            os.replace(f.name, path)
        except BaseException:
            os.unlink(f.name)
            raise


# -- gatehouse token ----------------------------------------------------------


def configure_token(parser: argparse.ArgumentParser) -> Handler:
    """Set up C{gatehouse token}."""
    parser.description = (
        "Print your token as a kubectl ExecCredential (the credential plugin "
        "of the kubeconfig written by gatehouse kubeconfig)."
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--file", metavar="FILE", help="a file holding the token")
    source.add_argument(
        "--env", metavar="NAME", help="an environment variable holding the token"
    )
    return _run_token


def exec_credential(token: str, now: float) -> dict[str, Any]:
    """
    Return the C{ExecCredential} for C{token}, its expiry read from the JWT's
    C{exp} claim WITHOUT verifying the signature (the gateway does).

    @raise CommandError: Not a JWT, or expired at C{now}.
    """
    import jwt

    try:
        claims = jwt.decode(
            token, options={"verify_signature": False, "verify_exp": False}
        )
    except jwt.InvalidTokenError as e:
        raise CommandError(f"the token is not a JWT: {e}")
    status: dict[str, Any] = {"token": token}
    expiry = claims.get("exp")
    if expiry is not None:
        if isinstance(expiry, bool) or not isinstance(expiry, (int, float)):
            raise CommandError("the token's exp claim is not a number")
        try:
            when = datetime.datetime.fromtimestamp(expiry, datetime.UTC)
        except (OverflowError, ValueError, OSError):
            raise CommandError("the token's exp claim is out of range")
        stamp = when.strftime("%Y-%m-%dT%H:%M:%SZ")
        if expiry <= now:
            raise CommandError(f"the token expired at {stamp}: get a new one")
        status["expirationTimestamp"] = stamp
    return {"apiVersion": EXEC_API_VERSION, "kind": "ExecCredential", "status": status}


def _run_token(args: argparse.Namespace) -> int:
    credential = exec_credential(_read_token(args.file, args.env), time.time())
    sys.stdout.write(json.dumps(credential) + "\n")
    return 0


def _read_token(path: str | None, variable: str | None) -> str:
    """The token from a file, a variable, or $GATEHOUSE_TOKEN(_FILE)."""
    if variable is None:
        from gatehouse.cli_approvals import _token

        return _token(argparse.Namespace(token_file=path), "--file FILE or --env NAME")
    token = os.environ.get(variable, "").strip()
    if not token:
        raise CommandError(f"no token: ${variable} is not set or empty")
    return _checked(token, f"${variable}")


def _checked(token: str, source: str) -> str:
    from gatehouse.cli_approvals import _checked as checked

    return checked(token.strip(), source)
