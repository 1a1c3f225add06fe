"""
C{gatehouse approvals}: list, show, approve and deny requests for approval
through a gateway's admin API.

    gatehouse approvals list [--all]
    gatehouse approvals show ID
    gatehouse approvals approve ID [-m COMMENT]
    gatehouse approvals deny ID [-m COMMENT]

The approver proves who they are with their own token: C{--token-file},
or the environment variable C{GATEHOUSE_TOKEN} (the token itself) or
C{GATEHOUSE_TOKEN_FILE} (a file holding it).

Where the admin API is, and what verifies its certificate, come from the
first of: C{--url} and C{--ca-file}; the environment variables
C{GATEHOUSE_ADMIN_URL} and C{GATEHOUSE_ADMIN_CA}; the gateway's own
configuration file, C{--config FILE} or C{GATEHOUSE_CONFIG} (its
C{approval.admin_url} and C{approval.admin_ca_file}, else its C{admin}
listener and that listener's certificate); else C{http://127.0.0.1:8080}.
The command a held client is shown names what the gateway knows (see
L{approve_options}).
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import ssl
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from typing import Any
from urllib.parse import quote, urlsplit

from gatehouse._duration import format_duration
from gatehouse.cli import CommandError, Handler
from gatehouse.recording.render import TerminalSafe, TextOutput

__all__ = ["DEFAULT_URL", "approve_options", "configure"]

DEFAULT_URL = "http://127.0.0.1:8080"
_TIMEOUT = 30.0
_STATEMENT_WIDTH = 48


def _common(parser: argparse.ArgumentParser, default: Any) -> None:
    """
    The connection options, on C{approvals} itself and on each action, so
    they may come before or after it.  An action's parser leaves unset ones
    alone (C{default=SUPPRESS}).
    """

    def value(given: Any) -> Any:
        return argparse.SUPPRESS if default is argparse.SUPPRESS else given

    parser.add_argument(
        "--config",
        default=value(None),
        metavar="FILE",
        help="the gateway's configuration: its admin API's URL and CA "
        "(default: $GATEHOUSE_CONFIG)",
    )
    parser.add_argument(
        "--url",
        default=value(None),
        metavar="URL",
        help="the admin API (default: $GATEHOUSE_ADMIN_URL, else from the "
        "configuration, else " + DEFAULT_URL + ")",
    )
    parser.add_argument(
        "--token-file",
        default=value(None),
        metavar="PATH",
        help="a file holding your token (default: $GATEHOUSE_TOKEN, "
        "else the file $GATEHOUSE_TOKEN_FILE)",
    )
    parser.add_argument(
        "--ca-file",
        default=value(None),
        metavar="PATH",
        help="CA certificates (PEM) to trust for an https URL (default: "
        "$GATEHOUSE_ADMIN_CA, else from the configuration)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        default=value(False),
        help="print the API's JSON",
    )


def configure(parser: argparse.ArgumentParser) -> Handler:
    """Set up C{gatehouse approvals}."""
    parser.description = (
        "List, show, approve and deny requests for approval through the "
        "gateway's admin API, as yourself (your token)."
    )
    _common(parser, None)
    actions = parser.add_subparsers(dest="action", metavar="ACTION", title="actions")
    actions.required = True

    listing = actions.add_parser(
        "list", help="requests waiting for a decision", description="List requests."
    )
    listing.add_argument(
        "--all", action="store_true", help="also recently decided requests"
    )
    _common(listing, argparse.SUPPRESS)

    show = actions.add_parser(
        "show", help="one request in full", description="Show one request in full."
    )
    show.add_argument("id", metavar="ID")
    _common(show, argparse.SUPPRESS)

    for action, text in (("approve", "approve a request"), ("deny", "deny a request")):
        vote = actions.add_parser(action, help=text, description=text.capitalize())
        vote.add_argument("id", metavar="ID")
        vote.add_argument(
            "-m",
            "--comment",
            "--message",
            default="",
            metavar="COMMENT",
            help="why (recorded with your vote)",
        )
        _common(vote, argparse.SUPPRESS)
    return _run


def _token(args: argparse.Namespace, option: str = "--token-file PATH") -> str:
    path = args.token_file
    if path is None:
        token = os.environ.get("GATEHOUSE_TOKEN", "").strip()
        if token:
            return _checked(token, "GATEHOUSE_TOKEN")
        path = os.environ.get("GATEHOUSE_TOKEN_FILE") or None
    if path is None:
        raise CommandError(
            f"no token: give {option}, or set GATEHOUSE_TOKEN (the token) "
            "or GATEHOUSE_TOKEN_FILE (a file holding it)"
        )
    with open(path, encoding="utf-8", errors="replace") as f:
        token = f.read().strip()
    if not token:
        raise CommandError(f"{path}: the token file is empty")
    return _checked(token, path)


def _checked(token: str, source: str) -> str:
    if not token.isascii() or any(c.isspace() or not c.isprintable() for c in token):
        raise CommandError(f"{source}: not a token (one line of ASCII expected)")
    return token


class _Client:
    """A small synchronous client of the admin API."""

    def __init__(self, url: str, token: str, ca_file: str | None) -> None:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise CommandError(f"{url!r} is not an http:// or https:// URL")
        self.url = url.rstrip("/")
        self._token = token
        self._context: ssl.SSLContext | None = None
        if parts.scheme == "https":
            try:
                self._context = ssl.create_default_context(cafile=ca_file)
            except (OSError, ssl.SSLError) as e:
                raise CommandError(f"cannot use {ca_file} as CA certificates: {e}")
            if ca_file is not None:
                # The file may hold the server's own certificate (or an
                # intermediate) rather than a root: trust it as it is.
                self._context.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        elif ca_file is not None:
            raise CommandError("--ca-file is for https:// URLs")

    def call(self, method: str, path: str, body: object = None) -> dict[str, Any]:
        data = None if body is None else json.dumps(body).encode("utf-8")
        request = urllib.request.Request(
            self.url + path,
            data=data,
            method=method,
            headers={
                "Authorization": f"Bearer {self._token}",
                "Accept": "application/json",
                "User-Agent": "gatehouse-cli",
                **({"Content-Type": "application/json"} if data is not None else {}),
            },
        )
        try:
            with urllib.request.urlopen(
                request, timeout=_TIMEOUT, context=self._context
            ) as response:
                payload = response.read()
        except urllib.error.HTTPError as e:
            raise CommandError(_server_message(e, self.url))
        except urllib.error.URLError as e:
            raise CommandError(f"cannot reach the admin API at {self.url}: {_why(e)}")
        except (TimeoutError, ConnectionError) as e:
            raise CommandError(f"cannot reach the admin API at {self.url}: {_why(e)}")
        except http.client.HTTPException:
            raise CommandError(f"{self.url} did not answer like an HTTP server")
        try:
            value = json.loads(payload)
        except ValueError:
            value = None
        if not isinstance(value, dict):
            raise CommandError(f"{self.url} did not answer like a gatehouse admin API")
        return value


def _why(error: BaseException) -> str:
    reason = getattr(error, "reason", error)
    if isinstance(reason, ConnectionRefusedError):
        return "connection refused (is the gateway running, with admin enabled?)"
    if isinstance(reason, ssl.SSLCertVerificationError):
        return f"TLS certificate not trusted ({reason.verify_message}; see --ca-file)"
    if isinstance(reason, TimeoutError):
        return "timed out"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror
    return str(reason)


def _server_message(error: urllib.error.HTTPError, url: str) -> str:
    try:
        value = json.loads(error.read(65536))
    except (ValueError, OSError, http.client.HTTPException):
        value = None
    message = value.get("message") if isinstance(value, dict) else None
    if isinstance(message, str):
        return message
    return (
        f"{url} answered HTTP {error.code} {error.reason} "
        "(is it a gatehouse admin API?)"
    )


def _connection(args: argparse.Namespace) -> tuple[str, str | None]:
    """The admin API's URL and the CA file to verify it with."""
    url = args.url or os.environ.get("GATEHOUSE_ADMIN_URL") or None
    ca_file = args.ca_file or os.environ.get("GATEHOUSE_ADMIN_CA") or None
    config = args.config or os.environ.get("GATEHOUSE_CONFIG") or None
    if config is not None and (url is None or ca_file is None):
        from gatehouse.config import ConfigError, load_admin_access

        try:
            access = load_admin_access(config)
        except ConfigError as e:
            raise CommandError("\n".join(e.lines()))
        if url is None:
            url = access.url
        if ca_file is None and url.startswith("https:"):
            ca_file = access.ca_file
    return url or DEFAULT_URL, ca_file


def approve_options(config: Any) -> tuple[str, ...]:
    """
    The C{gatehouse approvals} options that reach the admin API of a
    gateway running C{config} (a L{gatehouse.config.GatehouseConfig}), for
    the command shown to a held client: C{--url} (and C{--ca-file}) when
    C{approval.admin_url} says how approvers reach it, else C{--config}
    with the configuration's own path (for approvers on the gateway's
    host), else nothing.
    """
    approval = config.approval
    if approval is not None and approval.admin_url is not None:
        options: tuple[str, ...] = ("--url", approval.admin_url)
        if approval.admin_ca_file is not None:
            options += ("--ca-file", approval.admin_ca_file)
        return options
    if config.admin is not None:
        return ("--config", config.path)
    return ()


def _run(args: argparse.Namespace) -> int:
    url, ca_file = _connection(args)
    client = _Client(url, _token(args), ca_file)
    # Statements, names and comments come from agents and approvers: none
    # of their control characters may reach the approver's terminal (a CR
    # could hide the statement being approved).
    out = TerminalSafe(sys.stdout)
    if args.action == "list":
        state = "all" if args.all else "pending"
        answer = client.call("GET", f"/api/v1/approvals?state={state}")
        if args.json:
            return _dump(answer, out)
        _table(answer.get("approvals", []), _now(answer), args.all, out)
        return 0
    path = "/api/v1/approvals/" + quote(args.id, safe="")
    if args.action == "show":
        answer = client.call("GET", path)
        if args.json:
            return _dump(answer, out)
        _show(answer["approval"], _now(answer), out)
        return 0
    answer = client.call("POST", f"{path}/{args.action}", {"comment": args.comment})
    if args.json:
        return _dump(answer, out)
    out.write(_outcome(answer["approval"]) + "\n")
    return 0


def _dump(answer: object, out: TextOutput) -> int:
    json.dump(answer, out, indent=1)
    out.write("\n")
    return 0


def _now(answer: dict[str, Any]) -> float:
    now = answer.get("now")
    return float(now) if isinstance(now, int | float) else time.time()


def _span(seconds: float) -> str:
    """C{270} as C{"4m30s"}, C{5400} as C{"1h30m"}: whole seconds, two units."""
    return format_duration(max(0, round(seconds)), largest=2)


def _utc(seconds: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(seconds))


def _one_line(text: str, width: int) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= width else flat[: width - 1] + "…"


def _who(identity: dict[str, Any]) -> str:
    name, subject = identity.get("name") or "", identity.get("subject") or ""
    if name and subject and name != subject:
        return f"{name} ({subject})"
    return name or subject


def _approvals(approval: dict[str, Any]) -> int:
    voters = {
        (v["subject"], v.get("issuer", "")) for v in approval["votes"] if v["approved"]
    }
    return len(voters)


def _votes(approval: dict[str, Any]) -> str:
    return f"{_approvals(approval)}/{approval['approvals_required']}"


def _statement(approval: dict[str, Any]) -> str:
    commands = approval["commands"]
    if not commands:
        return "-"
    text = _one_line(commands[0]["text"], _STATEMENT_WIDTH)
    if len(commands) > 1:
        text += f" (+{len(commands) - 1} more)"
    return text


def _table(
    approvals: Sequence[dict[str, Any]], now: float, states: bool, out: TextOutput
) -> None:
    if not approvals:
        out.write("no approval requests\n" if states else "no pending approvals\n")
        return
    header: tuple[str, ...]
    header = ("ID", "AGE", "EXPIRES IN", "REQUESTER", "TARGET", "STATEMENT", "VOTES")
    if states:
        header = (*header[:3], "STATE", *header[3:])
    rows: list[tuple[str, ...]] = [header]
    for a in approvals:
        expires = _span(a["expires"] - now) if a["state"] == "pending" else "-"
        row: tuple[str, ...] = (
            a["id"],
            _span(now - a["created"]),
            expires,
            _who(a["requester"]),
            a["target"] or "-",
            _statement(a),
            _votes(a),
        )
        if states:
            row = (*row[:3], a["state"], *row[3:])
        rows.append(row)
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for row in rows:
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        out.write("  ".join(cells).rstrip() + "\n")


def _show(a: dict[str, Any], now: float, out: TextOutput) -> None:
    requester = a["requester"]
    groups = ", ".join(requester.get("groups") or []) or "-"
    created = f"{_utc(a['created'])} ({_span(now - a['created'])} ago)"
    if a["expires"] >= now:
        expires = f"{_utc(a['expires'])} (in {_span(a['expires'] - now)})"
    else:
        expires = f"{_utc(a['expires'])} ({_span(now - a['expires'])} ago)"
    fields = [
        ("id", a["id"]),
        ("state", a["state"]),
        ("reason", a.get("reason")),
        ("requester", _who(requester)),
        ("groups", groups),
        ("issuer", requester.get("issuer") or "-"),
        ("session", a["session_id"]),
        ("protocol", a["protocol"]),
        ("target", a["target"] or "-"),
        ("rule", a["rule"]),
        ("approvers", ", ".join(a["approvers"]) or "nobody"),
        ("approvals", f"{_approvals(a)} of {a['approvals_required']} needed"),
        ("created", created),
        ("expires", expires),
    ]
    for name, value in fields:
        if value is not None:
            out.write(f"{name + ':':<11} {value}\n")
    commands = a["commands"]
    out.write(f"commands ({len(commands)}):\n")
    for number, command in enumerate(commands, 1):
        objects = ", ".join(command.get("objects") or [])
        out.write(f"  [{number}] {command['kind']}")
        out.write(f" on {objects}\n" if objects else "\n")
        for line in command["text"].splitlines() or [""]:
            out.write(f"      {line}\n")
    votes = a["votes"]
    out.write(f"votes ({len(votes)}):\n" if votes else "votes: none\n")
    for vote in votes:
        verb = "approved" if vote["approved"] else "denied"
        line = f"  {verb} by {_who(vote)} at {_utc(vote['at'])}"
        if vote.get("comment"):
            line += f": {vote['comment']}"
        out.write(line + "\n")


def _outcome(a: dict[str, Any]) -> str:
    state = a["state"]
    if state == "pending":
        return (
            f"{a['id']}: {_approvals(a)} of {a['approvals_required']} "
            "approvals recorded"
        )
    if state in ("approved", "denied"):
        return f"{a['id']}: {state}"
    return f"{a['id']}: {state} ({a.get('reason') or 'no reason given'})"
