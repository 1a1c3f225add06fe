"""
C{gatehouse demo}: a working gateway in front of a throwaway PostgreSQL, in
one command.

The demo keeps its own files in a directory (C{./gatehouse-demo} unless told
otherwise), reused from run to run so that recordings pile up and
C{gatehouse sessions} shows their history::

    gatehouse.yaml        the gateway's configuration (rewritten every run)
    gatehouse.log         the gateway's log
    ca.crt, ca.key        the demo CA: psql's sslrootcert
    tls/                  the gateway's certificate, issued by the demo CA
    issuer/               the demo token issuer: ES256 key and static JWKS
    keys/                 recording keys: root key pair, epoch signing keys
    recordings/           signed session recordings and the session index
    upstream.password     the PostgreSQL password only the gateway knows
    alice.token, ...      demo tokens, valid for 12 hours from each start
    ssh/                  the SSH part (when sshd is installed): the gateway's
                          host key, its key for the target, its user CA, the
                          target sshd's host key, known_hosts, askpass

Every run starts a fresh PostgreSQL 15 cluster under C{/tmp} (as the
C{postgres} OS user when run as root, since PostgreSQL refuses to run as
root), fills a C{shop} database with customers and orders, and runs the
gateway in this process on the real reactor until SIGINT or SIGTERM.  Then
the gateway stops (open sessions are closed and their recordings sealed),
the PostgreSQL server is stopped and its files are removed.

When OpenSSH's C{sshd} is installed, the demo also runs a throwaway sshd on
loopback as an SSH target (this machine, as the user running the demo,
which trusts only the gateway's own key), behind an SSH listener of the
gateway; it is stopped with the demo.  Without sshd the demo says how to
install it and goes on with PostgreSQL only.

Everything the demo writes is for trying gatehouse out on one machine: its
keys and tokens sit next to each other in one directory, which a real
deployment would never do.
"""

from __future__ import annotations

import argparse
import datetime
import errno
import fcntl
import json
import os
import pwd
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path
from typing import IO, Any

import attrs

from gatehouse import _pgcluster as pg
from gatehouse._pki import CA, load_ca, make_ca
from gatehouse.cli import CommandError, Handler

__all__ = [
    "AUDIENCE",
    "DEFAULT_ADMIN_PORT",
    "DEFAULT_DIRECTORY",
    "DEFAULT_PORT",
    "DEFAULT_SSH_PORT",
    "ISSUER",
    "READY",
    "USERS",
    "DemoDatabase",
    "DemoSSHServer",
    "DemoUser",
    "configure",
]

DEFAULT_DIRECTORY = "gatehouse-demo"
DEFAULT_PORT = 6432
#: The admin API (approvals), on 127.0.0.1 over TLS.
DEFAULT_ADMIN_PORT = 6480
ISSUER = "https://demo.gatehouse.local"
AUDIENCE = "gatehouse"
GATEWAY_ID = "demo-gw"
TARGET = "shop"
#: The SSH listener's port, on 127.0.0.1.
DEFAULT_SSH_PORT = 2222
#: The SSH target: this machine, through the demo's own sshd.
SSH_TARGET = "demo-ssh"
#: Where sshd is looked for first (Debian's openssh-server).
SSHD = "/usr/sbin/sshd"
SSHD_PACKAGE = "openssh-server"
#: What the banner suggests ci-bot tries over SSH.
_SSH_TRY = (
    ("'uname -sr; id -un'", ""),
    ("'rm -r /tmp/gatehouse-demo-nothing'", "refused: a recursive delete"),
    ("'systemctl --version'", "waits for alice"),
)
#: The PostgreSQL role the gateway logs in as.
UPSTREAM_ROLE = "gatehouse"
TOKEN_LIFETIME = 12 * 3600
#: Recording keys: one epoch key per hour, issued two days ahead.
EPOCH_PERIOD = 3600
EPOCH_HORIZON = 2 * 86400
#: How long the gateway gets to close and seal its sessions when stopping.
STOP_TIMEOUT = 20.0
#: The line, on standard output, that says the demo is ready for clients.
READY = "gatehouse demo: ready"

_PREFIX = "gatehouse demo:"
#: What the banner suggests ci-bot tries.
_TRY = (
    "SELECT c.name, c.email, p.card_number FROM customers c",
    "    JOIN payment_cards p ON p.customer_id = c.id LIMIT 3;   -- masked",
    "UPDATE orders SET status = 'paid';             -- refused: no WHERE",
    "DELETE FROM orders WHERE id = 1;               -- refused: a delete",
    "ALTER TABLE orders ADD COLUMN note text;       -- waits for alice",
)
_KID = "demo-es256-1"
_CA_VALIDITY = datetime.timedelta(days=365)


@attrs.frozen
class DemoUser:
    """
    A person or agent the demo issues a token to.

    @ivar subject: The token's C{sub}, also the PostgreSQL user name shown.
    @ivar name: The display name (the C{name} claim).
    @ivar groups: The C{groups} claim.
    @ivar may: What the demo's policy lets this user do, for the banner.
    """

    subject: str
    name: str
    groups: tuple[str, ...]
    may: str = ""


USERS = (
    DemoUser(
        "ci-bot",
        "CI bot (demo agent)",
        ("agents",),
        "reads and changes rows with a WHERE; sees card numbers and e-mail "
        "addresses masked; may not delete, drop or truncate; its schema "
        "changes wait for alice",
    ),
    DemoUser(
        "alice",
        "Alice (demo DBA)",
        ("dba",),
        "may do anything, sees every value; approves what agents wait for",
    ),
)

_SHOP_SQL = """\
CREATE TABLE customers (
    id        serial PRIMARY KEY,
    name      text NOT NULL,
    email     text NOT NULL UNIQUE,
    city      text NOT NULL,
    signed_up date NOT NULL
);
CREATE TABLE payment_cards (
    customer_id integer PRIMARY KEY REFERENCES customers,
    card_number text NOT NULL
);
CREATE TABLE orders (
    id          serial PRIMARY KEY,
    customer_id integer NOT NULL REFERENCES customers,
    placed_at   timestamptz NOT NULL,
    item        text NOT NULL,
    quantity    integer NOT NULL CHECK (quantity > 0),
    total       numeric(10, 2) NOT NULL,
    status      text NOT NULL
        CHECK (status IN ('pending', 'paid', 'shipped', 'refunded'))
);
INSERT INTO customers (name, email, city, signed_up) VALUES
    ('Ada Lovelace',     'ada.lovelace@example.com',  'London',    '2023-01-14'),
    ('Grace Hopper',     'grace@example.org',         'Arlington', '2023-02-02'),
    ('Alan Turing',      'alan.turing@example.net',   'Wilmslow',  '2023-03-21'),
    ('Katherine Johnson','kjohnson@example.com',      'Hampton',   '2023-05-09'),
    ('Edsger Dijkstra',  'ewd@example.org',           'Nuenen',    '2023-06-30'),
    ('Barbara Liskov',   'liskov@example.com',        'Boston',    '2023-08-11'),
    ('Dennis Ritchie',   'dmr@example.net',           'Berkeley',  '2023-09-05'),
    ('Margaret Hamilton','mhamilton@example.com',     'Boston',    '2023-11-17'),
    ('Tim Berners-Lee',  'timbl@example.org',         'Geneva',    '2024-01-08'),
    ('Radia Perlman',    'radia@example.net',         'Seattle',   '2024-02-29'),
    ('Linus Torvalds',   'linus@example.com',         'Portland',  '2024-04-16'),
    ('Frances Allen',    'fran.allen@example.org',    'Peru, NY',  '2024-06-03');
INSERT INTO payment_cards (customer_id, card_number) VALUES
    (1,  '4111 1111 1111 1111'),
    (2,  '5555 5555 5555 4444'),
    (3,  '3782 822463 10005'),
    (4,  '6011 1111 1111 1117'),
    (5,  '4012 8888 8888 1881'),
    (6,  '5105 1051 0510 5100'),
    (7,  '3714 496353 98431'),
    (8,  '4000 0566 5566 5556'),
    (9,  '5200 8282 8282 8210'),
    (10, '6011 0009 9013 9424'),
    (11, '4242 4242 4242 4242'),
    (12, '3787 344936 71000');
INSERT INTO orders (customer_id, placed_at, item, quantity, total, status) VALUES
    (1,  '2024-06-01 09:12+00', 'Analytical engine gears',   3,  89.70, 'shipped'),
    (2,  '2024-06-02 14:40+00', 'Compiler handbook',         1,  42.00, 'shipped'),
    (2,  '2024-06-09 08:05+00', 'Nanosecond wire (30 cm)',  12,  18.00, 'paid'),
    (3,  '2024-06-11 17:22+00', 'Enigma rotor set',          1, 249.00, 'shipped'),
    (4,  '2024-06-15 11:03+00', 'Slide rule',                2,  64.50, 'shipped'),
    (5,  '2024-06-20 10:48+00', 'Shortest-path wall chart',  1,  24.90, 'refunded'),
    (6,  '2024-06-21 16:30+00', 'Abstraction textbook',      2,  97.80, 'shipped'),
    (7,  '2024-07-01 13:13+00', 'C reference card',          5,  15.00, 'shipped'),
    (8,  '2024-07-04 09:00+00', 'Core rope memory kit',      1, 329.00, 'paid'),
    (9,  '2024-07-08 19:45+00', 'Hypertext notebook',        3,  21.00, 'shipped'),
    (10, '2024-07-12 07:58+00', 'Spanning tree poem poster', 1,  19.95, 'pending'),
    (11, '2024-07-15 22:10+00', 'Mechanical keyboard',       1, 139.00, 'paid'),
    (12, '2024-07-19 12:34+00', 'Optimizing compiler notes', 1,  55.00, 'shipped'),
    (1,  '2024-07-23 08:20+00', 'Punched cards (box)',       4,  36.00, 'pending'),
    (3,  '2024-08-02 15:55+00', 'Tape drive belt',           2,  27.40, 'paid'),
    (5,  '2024-08-06 10:10+00', 'Semaphore flags',           2,  31.00, 'shipped'),
    (8,  '2024-08-09 18:18+00', 'Lunar module checklist',    1,  12.50, 'shipped'),
    (9,  '2024-08-14 09:09+00', 'Ethernet cable (5 m)',      6,  41.70, 'pending'),
    (11, '2024-08-20 20:20+00', 'Penguin plush',             2,  29.90, 'paid'),
    (6,  '2024-08-27 14:00+00', 'Type theory primer',        1,  48.00, 'pending');
"""


def configure(parser: argparse.ArgumentParser) -> Handler:
    """
    Set up C{gatehouse demo}.
    """
    parser.description = (
        "Start a throwaway PostgreSQL with a demo database, and a gateway in "
        "front of it that authenticates clients by token and records every "
        "session; print ready-to-paste psql and audit commands.  Runs until "
        "Ctrl-C; keys, tokens and recordings stay in the directory."
    )
    parser.add_argument(
        "--directory",
        default=DEFAULT_DIRECTORY,
        metavar="DIR",
        help=f"where the demo keeps its files (default ./{DEFAULT_DIRECTORY}, "
        "reused across runs)",
    )
    parser.add_argument(
        "--port",
        type=_port_argument,
        default=DEFAULT_PORT,
        metavar="PORT",
        help=f"the gateway's port on 127.0.0.1 (default {DEFAULT_PORT}; a free "
        "port is used when it is taken)",
    )
    parser.add_argument(
        "--ssh-port",
        type=_port_argument,
        default=DEFAULT_SSH_PORT,
        metavar="PORT",
        help=f"the gateway's SSH port on 127.0.0.1 (default {DEFAULT_SSH_PORT}; "
        "a free port is used when it is taken); only when sshd is installed",
    )
    parser.add_argument(
        "--keep",
        action="store_true",
        help="keep the PostgreSQL cluster's files (data, server log) when the "
        "demo stops",
    )
    return _run


def _port_argument(text: str) -> int:
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a TCP port (1 to 65535)")
    return port


# --- output -----------------------------------------------------------------


def _say(out: IO[str], line: str = "") -> None:
    """
    Write C{line} to C{out} and flush: whoever reads it may be waiting for it.
    """
    out.write(line + "\n")
    out.flush()


def _shown(path: Path) -> str:
    """
    C{path} as the user would type it: relative to the current directory
    when it lies below it, else absolute.
    """
    try:
        relative = os.path.relpath(path)
    except ValueError:
        return str(path)
    return str(path) if relative.startswith("..") else relative


def _shell_word(text: str) -> str:
    """
    C{text} quoted for a POSIX shell, preferring double quotes, which read
    naturally around a libpq connection string.
    """
    if not any(c in text for c in '"\\$`!'):
        return f'"{text}"'
    return shlex.quote(text)


def _gatehouse_command() -> str:
    """
    How to run the C{gatehouse} command here.
    """
    if shutil.which("gatehouse"):
        return "gatehouse"
    return f"{shlex.quote(sys.executable)} -m gatehouse.cli"


def _psql_command() -> str:
    """
    How to run psql here.
    """
    if shutil.which("psql"):
        return "psql"
    return shlex.quote(pg.pg_bin("psql"))


# --- files ------------------------------------------------------------------


def _write_private(path: Path, data: str | bytes) -> None:
    """
    Replace C{path} with C{data}, readable by this user only.
    """
    raw = data.encode("utf-8") if isinstance(data, str) else data
    tmp = path.with_name(path.name + ".tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(raw)
    os.replace(tmp, path)


def _lock(directory: Path) -> IO[bytes]:
    """
    Take the demo directory's lock, held until the returned file closes.

    @raise CommandError: when another demo runs in C{directory}.
    """
    handle = open(directory / ".lock", "wb")
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as e:
        handle.close()
        if e.errno in (errno.EAGAIN, errno.EACCES):
            raise CommandError(
                f"another gatehouse demo is running in {_shown(directory)}"
            )
        raise
    return handle


def _recording_keys(directory: Path) -> None:
    """
    Create the root key pair once; issue epoch keys for the windows from now
    to L{EPOCH_HORIZON} that no key covers yet.
    """
    from gatehouse.recording import keys
    from gatehouse.recording.cli_keys import plan_windows

    key_dir = directory / "keys"
    key_dir.mkdir(mode=0o700, exist_ok=True)
    private, public = key_dir / "root.key", key_dir / "root.pub"
    if private.exists():
        try:
            root = keys.load_root_private(str(private))
        except keys.KeyFileError as e:
            raise CommandError(f"{e}; remove {_shown(key_dir)} to start afresh")
    else:
        root = keys.generate_root_key()
        public.unlink(missing_ok=True)
        keys.save_root_key(root, str(private), str(public))
    signing = keys.KeyDirectory(str(key_dir / "signing"))
    existing: list[keys.EpochKey] = []
    problems: list[str] = []
    if os.path.isdir(signing.path):
        existing, problems = signing.load()
    if problems:
        raise CommandError(
            f"{problems[0]}; remove {_shown(key_dir / 'signing')} to start afresh"
        )
    now = time.time_ns()
    windows = plan_windows(
        existing, now, now + EPOCH_HORIZON * keys.NS, EPOCH_PERIOD * keys.NS
    )
    signing.add(
        key
        for start, stop in windows
        for key in keys.issue_epoch_keys(root, GATEWAY_ID, start, stop - start, 1)
    )


def _ca(directory: Path) -> CA:
    """
    The demo CA: the one from an earlier run while it stays valid for
    another day, else a new one.
    """
    try:
        ca = load_ca(directory)
    except (OSError, ValueError):
        return make_ca(directory, "gatehouse demo CA", _CA_VALIDITY)
    expires = ca.cert.not_valid_after_utc
    if expires - datetime.datetime.now(datetime.UTC) < datetime.timedelta(days=1):
        return make_ca(directory, "gatehouse demo CA", _CA_VALIDITY)
    return ca


def _issuer_key(directory: Path) -> Any:
    """
    The demo issuer's ES256 signing key (created on the first run), with
    its public half written as a static JWKS next to it.
    """
    import jwt
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    issuer_dir = directory / "issuer"
    issuer_dir.mkdir(mode=0o700, exist_ok=True)
    key_path = issuer_dir / "signing.key"
    key: ec.EllipticCurvePrivateKey | None = None
    if key_path.exists():
        try:
            loaded = serialization.load_pem_private_key(key_path.read_bytes(), None)
        except ValueError:
            loaded = None
        if isinstance(loaded, ec.EllipticCurvePrivateKey):
            key = loaded
    if key is None:
        key = ec.generate_private_key(ec.SECP256R1())
        _write_private(
            key_path,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
    jwk = json.loads(jwt.algorithms.ECAlgorithm.to_jwk(key.public_key()))
    jwk.update(kid=_KID, use="sig", alg="ES256")
    (issuer_dir / "jwks.json").write_text(json.dumps({"keys": [jwk]}, indent=1) + "\n")
    return key


def _mint_tokens(directory: Path, key: Any) -> dict[str, Path]:
    """
    Mint a token for each of L{USERS} into C{DIR/<subject>.token}.

    @return: The token files by subject.
    """
    import jwt

    now = int(time.time())
    files = {}
    for user in USERS:
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user.subject,
            "name": user.name,
            "groups": list(user.groups),
            "iat": now,
            "nbf": now - 60,
            "exp": now + TOKEN_LIFETIME,
        }
        token = jwt.encode(claims, key, algorithm="ES256", headers={"kid": _KID})
        path = directory / f"{user.subject}.token"
        _write_private(path, token + "\n")
        files[user.subject] = path
    return files


_SSH_LISTENER = """\
  # Where ssh and sftp connect: the login name is the target's name
  # (ssh -p {ssh_port} {ssh_target}@{address}), the token the password; or
  # a certificate from the gateway's user CA (gatehouse ssh-cert).
  - name: ssh
    protocol: ssh
    address: {address}
    port: {ssh_port}
    options:
      host_keys: [ssh/gateway_host_ed25519]
      user_ca_keys: [ssh/user_ca.pub]
"""

_SSH_TARGET = """\
  # This machine, through the demo's own sshd, which trusts only the
  # gateway's key (ssh/upstream_ed25519) and only for account {account}.
  - name: {ssh_target}
    protocol: ssh
    options:
      host: {address}
      port: {sshd_port}         # this run's throwaway sshd
      host_keys: ["{sshd_host_key}"]
      key: ssh/upstream_ed25519
      user: {account}
      allow_groups: [dba, agents]
"""

_SSH_RULES = """\
    # SSH (agents; the DBA matched above): each exec request, shell,
    # SFTP operation and port forward is decided before sshd sees it.
    - name: no-recursive-delete
      protocols: [ssh]
      program: [rm]
      option: [-r, -R, --recursive]
      action: deny
      message: agents may not delete recursively
    - name: restarts-need-approval
      protocols: [ssh]
      program: [systemctl, reboot, shutdown]
      action: review
      message: systemctl, reboot and shutdown wait for a DBA
    - name: no-ssh-hopping
      protocols: [ssh]
      kind: [forward]
      destination: ["*:22"]
      action: deny
"""

_SSH_USER_CA = """
# The gateway's SSH user CA: `gatehouse ssh-cert` exchanges a token for a
# short-lived certificate (the SSH listener trusts ssh/user_ca.pub).
ssh_user_ca:
  key: ssh/user_ca
  certificate_lifetime: 30m
"""


def _listen_port(wanted: int) -> int:
    """
    C{wanted} if a server could listen on it on 127.0.0.1 now, else a free
    port.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # As Twisted's listening sockets do, so that connections of an
        # earlier run lingering in TIME_WAIT do not count as "taken".
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((pg.LOOPBACK, wanted))
        except OSError:
            return pg.free_port()
    return wanted


_CONFIG = """\
# The gateway of `gatehouse demo`.  The demo writes this file on every run
# (edit a copy, not this one); relative paths are relative to this file.
# The PostgreSQL target exists only while `gatehouse demo` runs, but the
# recordings stay, so the audit commands work at any time:
#
#   gatehouse sessions --config {config}
#   gatehouse replay   --config {config} SESSION_ID
#   gatehouse verify   --config {config} SESSION_ID
#
# While it runs, a DBA decides what agents wait for (with their own token
# in GATEHOUSE_TOKEN_FILE):
#
#   gatehouse approvals list    --config {config}
#   gatehouse approvals approve --config {config} ID

gateway:
  # Names this gateway in every recording seal it signs.
  id: {gateway_id}

identity:
  issuers:
    # The demo's own token issuer, with its keys in a static JWKS file.
    # For a real OIDC provider, give its issuer URL and drop jwks_file:
    # keys are then found through /.well-known/openid-configuration.
    - issuer: {issuer}
      audience: {audience}
      algorithms: [ES256]
      jwks_file: issuer/jwks.json
      groups_claim: groups    # the claim listing the identity's groups
      name_claim: name        # the display name shown in session listings

recording:
  # One directory of signed, hash-chained segment files per session, and
  # the session index (index.sqlite3) that `gatehouse sessions` searches.
  directory: recordings
  # Short-lived epoch keys (one per hour here), each erased when its window
  # ends.  They are certified by keys/root.key, which a real deployment
  # keeps off the gateway (see `gatehouse keys`).
  signing_keys: keys/signing
  # What `gatehouse verify` trusts.
  root_public_keys: [keys/root.pub]
  # Seal a segment at least this often, even when the session is idle.
  seal_interval: 10s
  # Warn in gatehouse.log when the epoch keys run out sooner than this.
  key_warning: 6h

listeners:
  # Where psql connects: TLS with the demo CA's certificate for localhost.
  - name: pg
    protocol: postgres
    address: {address}
    port: {port}
    tls:
      certificate: tls/localhost.crt
      key: tls/localhost.key
    options:
      # The token is sent as the password, so never without TLS.
      allow_cleartext: false
{ssh_listener}
targets:
  # Clients choose a target by the database name they connect to.
  - name: {target}
    protocol: postgres
    options:
      host: {address}
      port: {upstream_port}      # this run's throwaway PostgreSQL
      database: {target}
      # The gateway logs in with its own role and password (SCRAM); clients
      # never see either.
      user: {upstream_role}
      password_file: upstream.password
      tls: {{mode: verify-full, ca_file: ca.crt}}
      # Only identities in one of these groups may connect.
      allow_groups: [dba, agents]
{ssh_target}
policy:
  # The policy a real deployment starts from: the DBA may do anything;
  # agents read and change rows, never delete, drop or truncate, never
  # change every row at once, and their schema changes wait for a DBA.
  groups: [dba, agents]
  # Text PostgreSQL cannot parse gets PostgreSQL's own syntax error.
  unparseable: error
  # Code the gateway cannot read (DO, CREATE FUNCTION, SQL built at run
  # time for dblink or query_to_xml): refused.
  opaque: deny
  # Who approves a statement held for review, and how long it may wait.
  review:
    approvers: [dba]
    approvals: 1
    timeout: 10m
  rules:
    # First match decides.  The DBA may do anything.
    - name: dba-anything
      groups: [dba]
      action: allow
    # Categories name every statement kind that deletes, drops, changes the
    # schema or privileges (see docs/policy.md for the lists).
    - name: no-destructive
      category: [destructive]
      action: deny
      message: agents may not drop, truncate or delete
    - name: no-unbounded-writes
      category: [write]
      flag: [no-where]
      action: deny
      message: add a WHERE clause that limits the rows
    # The statement waits inside the agent's session until a DBA runs
    # `gatehouse approvals approve` (the command is shown to the agent).
    - name: schema-changes-need-approval
      category: [ddl]
      action: review
      message: schema changes wait for a DBA
    - name: no-privilege-or-server-changes
      category: [privilege, admin]
      action: deny
    - name: no-server-files
      flag: [server-file]
      action: deny
    - name: no-copy-files
      flag: [copy-from-file]
      action: deny
    - name: no-copy-to-files
      flag: [copy-to-file]
      action: deny
    - name: no-server-programs
      flag: [copy-program]
      action: deny
{ssh_rules}
masking:
  # Agents see card numbers and e-mail addresses masked, in every message
  # that carries values; so does the recording of their sessions.
  - name: agents-pii
    groups: [agents]
    targets: [{target}]
    detect: [card, email]
{ssh_user_ca}
# The admin API: approvals, sessions, /health and /metrics.  Only the
# approver groups (dba) may use /api/.  The command shown to a waiting
# agent is `gatehouse approvals approve --config <this file> ID`: it reads
# the address and certificate below.
admin:
  address: {address}
  port: {admin_port}
  tls:
    certificate: tls/localhost.crt
    key: tls/localhost.key
"""


# --- the database -----------------------------------------------------------


class DemoDatabase:
    """
    A throwaway PostgreSQL 15 cluster on a free loopback port with the
    C{shop} database, owned by L{UPSTREAM_ROLE}, which logs in with SCRAM
    over TLS only.

    Its files live in a fresh directory under the system's temporary
    directory (the C{postgres} OS user, who runs it when we are root, may
    not be able to enter the demo directory); a sidecar process stops the
    server and removes them should this process die without L{stop}.
    """

    def __init__(self, ca: CA, password: str) -> None:
        """
        @param ca: Issues the server's certificate.
        @param password: L{UPSTREAM_ROLE}'s password.
        """
        self.ca = ca
        self.password = password
        self.base: Path | None = None
        self.port = 0
        self.pid: int | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    @property
    def data_dir(self) -> Path:
        """
        The cluster's data directory.
        """
        assert self.base is not None
        return self.base / "data"

    @property
    def log_path(self) -> Path:
        """
        The server log.
        """
        return self.data_dir / "server.log"

    def start(self) -> None:
        """
        Create, start and fill the cluster.

        @raise pg.ClusterError: when it cannot.
        """
        pg.ensure_binaries()
        pg.ensure_os_user()
        self.base = base = Path(tempfile.mkdtemp(prefix="gatehouse-demo-pg-"))
        self._watchdog = pg.start_watchdog(
            base, self.data_dir / "postmaster.pid", signal.SIGQUIT
        )
        os.chmod(base, 0o700)
        pg.chown_to_owner(base)
        socket_dir, tls_dir = base / "sock", base / "tls"
        for private in (socket_dir, tls_dir):
            private.mkdir(mode=0o700)
            pg.chown_to_owner(private)
        owner = pg.OS_USER if pg.is_root() else None
        cert, key = self.ca.issue(
            "localhost", ("localhost", pg.LOOPBACK), tls_dir, owner=owner
        )
        pg.initdb(self.data_dir, cwd=base)
        with (self.data_dir / "postgresql.conf").open("a") as f:
            f.write("\ninclude 'gatehouse-demo.conf'\n")
        (self.data_dir / "pg_hba.conf").write_text(
            "# written by gatehouse demo; first match wins\n"
            "local    all   all  trust\n"
            f"hostssl {TARGET}  {UPSTREAM_ROLE}  {pg.LOOPBACK}/32  scram-sha-256\n"
        )
        settings = {
            "listen_addresses": f"'{pg.LOOPBACK}'",
            "unix_socket_directories": f"'{socket_dir}'",
            "max_connections": "50",
            "shared_buffers": "16MB",
            "fsync": "off",
            "synchronous_commit": "off",
            "full_page_writes": "off",
            "ssl": "on",
            "ssl_cert_file": f"'{cert}'",
            "ssl_key_file": f"'{key}'",
            "password_encryption": "'scram-sha-256'",
            "log_connections": "on",
            "log_disconnections": "on",
            "log_statement": "'all'",
            "log_line_prefix": "'%m [%p] %q%u@%d '",
            "timezone": "'UTC'",
            "log_timezone": "'UTC'",
        }

        def write_conf(port: int) -> None:
            lines = [f"{k} = {v}" for k, v in {**settings, "port": port}.items()]
            path = self.data_dir / "gatehouse-demo.conf"
            path.write_text("# written by gatehouse demo\n" + "\n".join(lines) + "\n")
            pg.chown_to_owner(path)

        self.port, self.pid = pg.start_server(
            self.data_dir, self.log_path, write_conf, cwd=base
        )
        self._psql(
            pg.SUPERUSER,
            "postgres",
            f"CREATE ROLE {UPSTREAM_ROLE} LOGIN "
            f"PASSWORD {pg.sql_literal(self.password)};\n"
            f"CREATE DATABASE {TARGET} OWNER {UPSTREAM_ROLE};\n",
        )
        self._psql(UPSTREAM_ROLE, TARGET, _SHOP_SQL)

    def _psql(self, user: str, dbname: str, sql: str) -> None:
        """
        Run C{sql} as C{user} in C{dbname} over the server's private socket.
        """
        assert self.base is not None
        target = pg.conninfo(
            host=self.base / "sock", port=self.port, user=user, dbname=dbname
        )
        result = subprocess.run(
            [pg.pg_bin("psql"), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", target],
            input=sql,
            env=pg.clean_env(),
            capture_output=True,
            text=True,
            timeout=60,
        )
        if result.returncode != 0:
            raise pg.ClusterError(
                f"setting up the demo database failed: {result.stderr.strip()}"
            )

    def stop(self, keep: bool = False) -> None:
        """
        Stop the server, if it runs, and remove its files unless C{keep}.
        """
        try:
            if self.base is not None:
                pg.stop_server(self.data_dir, self.pid, cwd=self.base)
            self.pid = None
        finally:
            pg.stop_watchdog(self._watchdog)
            self._watchdog = None
            if self.base is not None and not keep:
                shutil.rmtree(self.base, ignore_errors=True)


# --- the SSH target ---------------------------------------------------------


def sshd_program() -> str | None:
    """
    The installed C{sshd}, or None.
    """
    for candidate in (SSHD, shutil.which("sshd")):
        if candidate and os.access(candidate, os.X_OK):
            return os.path.abspath(candidate)  # sshd re-executes itself
    return None


def _ssh_key(path: Path, comment: str) -> str:
    """
    The OpenSSH Ed25519 key pair at C{path} and C{path.pub} (created on the
    first run, mode 0600); its public line.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    public_path = path.with_name(path.name + ".pub")
    if path.exists() and public_path.exists():
        words = public_path.read_text().split()
        if len(words) >= 2:
            return f"{words[0]} {words[1]}"
    key = ed25519.Ed25519PrivateKey.generate()
    _write_private(
        path,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.OpenSSH,
            serialization.NoEncryption(),
        ),
    )
    public = (
        key.public_key()
        .public_bytes(
            serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH
        )
        .decode("ascii")
    )
    public_path.write_text(f"{public} {comment}\n")
    return public


class DemoSSHError(Exception):
    """
    The demo's sshd could not start; the message says why.
    """


class DemoSSHServer:
    """
    A throwaway OpenSSH server on a free loopback port: the demo's SSH
    target.  It lets in one account, the user running the demo, and only
    with the gateway's key (public key authentication only, no PAM).

    Its host key stays in the demo directory (C{ssh/}); its configuration,
    pid file and log live in a fresh directory under the system's temporary
    directory, which a sidecar removes (stopping sshd) should this process
    die without L{stop}.
    """

    def __init__(self, program: str, key_dir: Path, gateway_key: str) -> None:
        """
        @param program: The absolute path of C{sshd}.
        @param key_dir: Where the host key is kept between runs.
        @param gateway_key: The gateway's public key line, the only one
            authorized.
        """
        self.program = program
        self.key_dir = key_dir
        self.gateway_key = gateway_key
        self.account = pwd.getpwuid(os.getuid()).pw_name
        self.base: Path | None = None
        self.port = 0
        self.host_key = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._watchdog: subprocess.Popen[bytes] | None = None

    @property
    def log_path(self) -> Path:
        """
        sshd's log (its standard error).
        """
        assert self.base is not None
        return self.base / "sshd.log"

    def start(self, timeout: float = 20.0) -> None:
        """
        Start sshd; return once it answers with its SSH banner.

        @raise DemoSSHError: when it does not.
        """
        self.host_key = _ssh_key(self.key_dir / "target_host_ed25519", "demo-sshd")
        self.base = base = Path(tempfile.mkdtemp(prefix="gatehouse-demo-sshd-"))
        pid_path = base / "sshd.pid"
        self._watchdog = pg.start_watchdog(base, pid_path, signal.SIGTERM)
        if pg.is_root():
            # sshd insists on its privilege separation directory.
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
        authorized = base / "authorized_keys"
        authorized.write_text(self.gateway_key + " gatehouse-demo\n")
        self.port = pg.free_port()
        config = base / "sshd_config"
        config.write_text(
            "# written by gatehouse demo\n"
            f"ListenAddress {pg.LOOPBACK}:{self.port}\n"
            f"HostKey {self.key_dir / 'target_host_ed25519'}\n"
            f"PidFile {pid_path}\n"
            f"AuthorizedKeysFile {authorized}\n"
            f"AllowUsers {self.account}\n"
            "StrictModes no\n"
            "UsePAM no\n"
            "PubkeyAuthentication yes\n"
            "PasswordAuthentication no\n"
            "KbdInteractiveAuthentication no\n"
            "PermitRootLogin prohibit-password\n"
            "Subsystem sftp internal-sftp\n"
            "AllowTcpForwarding yes\n"
            "X11Forwarding no\n"
            "AcceptEnv LANG LC_* TERM\n"
            "PrintMotd no\n"
            "UseDNS no\n"
            "LogLevel VERBOSE\n"
        )
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [self.program, "-D", "-e", "-f", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                cwd=base,
                env={"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C"},
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise DemoSSHError(f"sshd exited on start: {self._log_tail()}")
            try:
                with socket.create_connection((pg.LOOPBACK, self.port), 1) as s:
                    s.settimeout(2)
                    if s.recv(64).startswith(b"SSH-2.0-"):
                        return
            except OSError:
                time.sleep(0.05)
        raise DemoSSHError(f"sshd did not answer within {timeout}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-2000:].strip()
        except OSError:
            return "(no log)"

    def stop(self) -> None:
        """
        Stop sshd and the connections it serves (by pid), and remove its
        files.
        """
        try:
            process, self._process = self._process, None
            if process is not None:
                pids = [process.pid]
                todo = [process.pid]
                while todo:
                    children = pg.child_pids(todo.pop())
                    pids += children
                    todo += children
                for pid in pids:
                    try:
                        os.kill(pid, signal.SIGTERM)
                    except ProcessLookupError:
                        pass
                if not pg.wait_gone(pids, 10):
                    for pid in pids:
                        try:
                            os.kill(pid, signal.SIGKILL)
                        except ProcessLookupError:
                            pass
                try:
                    process.wait(10)
                except subprocess.TimeoutExpired:
                    pass
        finally:
            pg.stop_watchdog(self._watchdog)
            self._watchdog = None
            if self.base is not None:
                shutil.rmtree(self.base, ignore_errors=True)
                self.base = None


# --- the run ----------------------------------------------------------------


def _run(args: argparse.Namespace) -> int:
    directory = Path(args.directory).absolute()
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as e:
        raise CommandError(f"{_shown(directory)}: {e.strerror}")
    lock = _lock(directory)
    try:
        return _Demo(
            directory, args.port, args.keep, sys.stdout, ssh_port=args.ssh_port
        ).run()
    finally:
        lock.close()


def _interrupt(signum: int, frame: object) -> None:
    """
    SIGTERM while setting up: unwind as Ctrl-C does.
    """
    raise KeyboardInterrupt


class _Demo:
    """
    One run of the demo: set everything up, run the gateway, clean up.
    """

    def __init__(
        self,
        directory: Path,
        port: int,
        keep: bool,
        out: IO[str],
        ssh_port: int = DEFAULT_SSH_PORT,
    ):
        self.directory = directory
        self.wanted_port = port
        self.keep = keep
        self.out = out
        self.failure: str | None = None
        self.tokens: dict[str, Path] = {}
        self.admin_port = DEFAULT_ADMIN_PORT
        self.wanted_ssh_port = ssh_port
        self.ssh_port = 0
        #: the SSH target, while it runs (None: no SSH part)
        self.sshd: DemoSSHServer | None = None

    def path(self, *parts: str) -> Path:
        """
        A path in the demo directory.
        """
        return self.directory.joinpath(*parts)

    def run(self) -> int:
        """
        Run the demo until a signal stops it.

        @return: The exit status.
        """
        # Ctrl-C and SIGTERM stop the demo: while setting up they unwind
        # like KeyboardInterrupt; once the reactor runs, its own handlers
        # (installed only over Python's default SIGINT handler) stop it.
        # Even when started with SIGINT ignored, as background jobs are.
        previous_int = signal.signal(signal.SIGINT, signal.default_int_handler)
        previous_term = signal.signal(signal.SIGTERM, _interrupt)
        database: DemoDatabase | None = None
        self.sshd = None
        try:
            _say(
                self.out,
                f"{_PREFIX} files in {_shown(self.directory)} (kept between runs)",
            )
            ca = self.prepare()
            password = secrets.token_urlsafe(24)
            _write_private(self.path("upstream.password"), password + "\n")
            if pg.is_root() and not (pg.PG_BIN_DIR / "initdb").exists():
                _say(self.out, f"{_PREFIX} installing {pg.PG_PACKAGES[0]} with apt-get")
            database = DemoDatabase(ca, password)
            try:
                database.start()
            except pg.ClusterError as e:
                raise CommandError(f"cannot start PostgreSQL: {e}")
            assert database.base is not None
            removed = "kept" if self.keep else "removed"
            _say(
                self.out,
                f"{_PREFIX} PostgreSQL {pg.PG_MAJOR} on {pg.LOOPBACK}:{database.port} "
                f"with database {TARGET} (files in {database.base}, {removed} at exit)",
            )
            port = _listen_port(self.wanted_port)
            if port != self.wanted_port:
                _say(
                    self.out,
                    f"{_PREFIX} port {self.wanted_port} is taken; using {port}",
                )
            self.admin_port = _listen_port(DEFAULT_ADMIN_PORT)
            if self.admin_port == port:
                self.admin_port = pg.free_port()
            self.start_ssh(taken=(port, self.admin_port))
            self.write_config(port, database.port)
            return self.serve(port)
        finally:
            signal.signal(signal.SIGINT, previous_int)
            signal.signal(signal.SIGTERM, previous_term)
            if self.sshd is not None:
                self.sshd.stop()
                self.sshd = None
            if database is not None:
                self.stop_database(database)

    def prepare(self) -> CA:
        """
        Create or renew the demo's keys, certificates and tokens.

        @return: The demo CA.
        """
        _recording_keys(self.directory)
        ca = _ca(self.directory)
        ca.issue("localhost", ("localhost", pg.LOOPBACK), self.path("tls"))
        self.tokens = _mint_tokens(self.directory, _issuer_key(self.directory))
        self.path("recordings").mkdir(mode=0o700, exist_ok=True)
        return ca

    def start_ssh(self, taken: tuple[int, ...]) -> None:
        """
        Start the SSH target and choose the SSH listener's port, when sshd
        is installed; else say how to install it.  A failure to start it
        is reported and leaves the demo without its SSH part.
        """
        program = sshd_program()
        if program is None:
            _say(
                self.out,
                f"{_PREFIX} no sshd here, so no SSH target; for the SSH part "
                f"install it (apt-get install {SSHD_PACKAGE}) and run the demo "
                "again",
            )
            return
        keys = self.path("ssh")
        keys.mkdir(mode=0o700, exist_ok=True)
        _ssh_key(keys / "gateway_host_ed25519", "gatehouse-demo-gateway")
        _ssh_key(keys / "user_ca", "gatehouse-demo-user-ca")
        upstream = _ssh_key(keys / "upstream_ed25519", "gatehouse-demo-upstream")
        askpass = keys / "askpass"
        askpass.write_text(
            "#!/bin/sh\n"
            "# For ssh (SSH_ASKPASS=this SSH_ASKPASS_REQUIRE=force): answer the\n"
            "# password prompt with the token in the file GATEHOUSE_TOKEN_FILE.\n"
            'exec cat "${GATEHOUSE_TOKEN_FILE:?set GATEHOUSE_TOKEN_FILE}"\n'
        )
        askpass.chmod(0o700)
        sshd = DemoSSHServer(program, keys, upstream)
        try:
            sshd.start()
        except (DemoSSHError, OSError, pg.ClusterError) as e:
            sshd.stop()
            _say(self.out, f"{_PREFIX} sshd did not start, so no SSH target: {e}")
            return
        self.sshd = sshd
        _say(
            self.out,
            f"{_PREFIX} sshd on {pg.LOOPBACK}:{sshd.port} as SSH target "
            f"{SSH_TARGET} (account {sshd.account}; stopped at exit)",
        )
        port = _listen_port(self.wanted_ssh_port)
        while port in taken:
            port = pg.free_port()
        if port != self.wanted_ssh_port:
            _say(
                self.out,
                f"{_PREFIX} port {self.wanted_ssh_port} is taken; SSH on {port}",
            )
        self.ssh_port = port
        host = (keys / "gateway_host_ed25519.pub").read_text().split()[:2]
        (keys / "known_hosts").write_text(f"[{pg.LOOPBACK}]:{port} {' '.join(host)}\n")

    def ssh_sections(self) -> dict[str, str]:
        """
        The SSH parts of C{gatehouse.yaml} (empty without the SSH target).
        """
        if self.sshd is None:
            return dict.fromkeys(
                ("ssh_listener", "ssh_target", "ssh_rules", "ssh_user_ca"), ""
            )
        values = {
            "address": pg.LOOPBACK,
            "ssh_port": self.ssh_port,
            "ssh_target": SSH_TARGET,
            "sshd_port": self.sshd.port,
            "sshd_host_key": self.sshd.host_key,
            "account": self.sshd.account,
        }
        return {
            "ssh_listener": _SSH_LISTENER.format(**values),
            "ssh_target": _SSH_TARGET.format(**values),
            "ssh_rules": _SSH_RULES,
            "ssh_user_ca": _SSH_USER_CA,
        }

    def write_config(self, port: int, upstream_port: int) -> None:
        """
        Write C{gatehouse.yaml}.
        """
        text = _CONFIG.format(
            **self.ssh_sections(),
            config=_shown(self.path("gatehouse.yaml")),
            gateway_id=GATEWAY_ID,
            issuer=ISSUER,
            audience=AUDIENCE,
            address=pg.LOOPBACK,
            port=port,
            admin_port=self.admin_port,
            target=TARGET,
            upstream_port=upstream_port,
            upstream_role=UPSTREAM_ROLE,
        )
        self.path("gatehouse.yaml").write_text(text)

    def serve(self, port: int) -> int:
        """
        Run the gateway on the real reactor until it is told to stop.
        """
        from twisted.internet import reactor

        from gatehouse.config import load_config
        from gatehouse.service import makeService

        config = load_config(str(self.path("gatehouse.yaml")))
        log = open(self.path("gatehouse.log"), "a", encoding="utf-8")
        try:
            self.begin_logging(log)
            service = makeService(config, reactor)

            def start() -> None:
                try:
                    service.startService()
                except Exception as e:
                    self.failure = f"the gateway did not start: {e}"
                    reactor.stop()
                    return
                self.announce(port)

            def stop() -> Any:
                _say(self.out, f"{_PREFIX} stopping: closing and sealing sessions")
                return service.stopService().addTimeout(STOP_TIMEOUT, reactor)

            reactor.callWhenRunning(start)
            reactor.addSystemEventTrigger("before", "shutdown", stop)
            reactor.run()
        finally:
            log.close()
        if self.failure is not None:
            raise CommandError(self.failure)
        return 0

    def begin_logging(self, log: IO[str]) -> None:
        """
        Send the gateway's log to C{log}, and warnings and errors to
        standard error as well.
        """
        from twisted.logger import (
            FilteringLogObserver,
            LogLevel,
            LogLevelFilterPredicate,
            globalLogBeginner,
            textFileLogObserver,
        )

        loud = FilteringLogObserver(
            textFileLogObserver(sys.stderr),
            [LogLevelFilterPredicate(defaultLogLevel=LogLevel.warn)],
        )
        globalLogBeginner.beginLoggingTo(
            [textFileLogObserver(log), loud], redirectStandardIO=False
        )

    def announce(self, port: int) -> None:
        """
        Print how to connect as each user, what to try, how to approve
        what waits, and how to audit what gets recorded.
        """
        out = self.out
        ca = _shown(self.path("ca.crt"))
        psql = _psql_command()
        gatehouse = _gatehouse_command()
        config = shlex.quote(_shown(self.path("gatehouse.yaml")))
        _say(
            out,
            f"{_PREFIX} gateway on {pg.LOOPBACK}:{port} (TLS), admin API on "
            f"https://{pg.LOOPBACK}:{self.admin_port}, "
            f"log in {_shown(self.path('gatehouse.log'))}",
        )
        _say(out)
        hours = TOKEN_LIFETIME // 3600
        _say(
            out,
            "Connect through the gateway, a terminal per user "
            f"(tokens valid for {hours} hours):",
        )
        for user in USERS:
            target = pg.conninfo(
                host="localhost",
                port=port,
                dbname=TARGET,
                user=user.subject,
                sslmode="verify-full",
                sslrootcert=ca,
            )
            token = shlex.quote(_shown(self.tokens[user.subject]))
            _say(out)
            about = f"{user.subject} (group {', '.join(user.groups)}): {user.may}"
            for line in textwrap.wrap(about, 72):
                _say(out, f"  # {line}")
            _say(out, f'  export PGPASSWORD="$(cat {token})"')
            _say(out, f"  {psql} {_shell_word(target)}")
        _say(out)
        _say(out, "Try as ci-bot:")
        _say(out)
        for line in _TRY:
            _say(out, f"  {line}")
        if self.sshd is not None:
            self.announce_ssh(gatehouse, config)
        _say(out)
        _say(
            out,
            "Approve as alice, in another terminal (the command is in "
            "ci-bot's NOTICE too):",
        )
        _say(out)
        alice = shlex.quote(str(self.tokens["alice"]))
        _say(out, f"  export GATEHOUSE_TOKEN_FILE={alice}")
        _say(out, f"  {gatehouse} approvals list --config {config}")
        _say(out, f"  {gatehouse} approvals approve --config {config} ID")
        _say(out)
        _say(out, "Audit the recorded sessions (now, or after stopping the demo):")
        _say(out)
        _say(out, f"  {gatehouse} sessions --config {config}")
        _say(out, f"  {gatehouse} replay --config {config} SESSION_ID")
        _say(out, f"  {gatehouse} verify --config {config} SESSION_ID")
        _say(out)
        _say(out, f"{READY}; press Ctrl-C to stop")

    def announce_ssh(self, gatehouse: str, config: str) -> None:
        """
        Print how to reach the SSH target as each user, with the token as
        the password or with a certificate, and what to try.
        """
        assert self.sshd is not None
        out = self.out
        keys = self.path("ssh")
        known = shlex.quote(_shown(keys / "known_hosts"))
        where = f"{SSH_TARGET}@{pg.LOOPBACK}"
        ssh = f"ssh -p {self.ssh_port} -o UserKnownHostsFile={known} {where}"
        sftp = f"sftp -P {self.ssh_port} -o UserKnownHostsFile={known} {where}"
        askpass = shlex.quote(_shown(keys / "askpass"))
        may = {
            "ci-bot": "runs commands and SFTP; rm -r is refused; systemctl, "
            "reboot and shutdown wait for alice",
            "alice": "may do anything",
        }
        _say(out)
        about = (
            f"Or over SSH, to this machine as {self.sshd.account} (the token is "
            "the password; ssh reads it through the askpass script):"
        )
        for line in textwrap.wrap(about, 76):
            _say(out, line)
        for user in USERS:
            token = shlex.quote(_shown(self.tokens[user.subject]))
            _say(out)
            for line in textwrap.wrap(f"{user.subject}: {may[user.subject]}", 72):
                _say(out, f"  # {line}")
            _say(
                out,
                f"  export SSH_ASKPASS={askpass} SSH_ASKPASS_REQUIRE=force "
                f"GATEHOUSE_TOKEN_FILE={token}",
            )
            _say(out, f"  {ssh}")
            _say(out, f"  {sftp}")
        _say(out)
        _say(out, "Try as ci-bot over SSH:")
        _say(out)
        for command, note in _SSH_TRY:
            _say(out, f"  {ssh} {command}" + (f"   # {note}" if note else ""))
        _say(out)
        about = (
            "Or log in with a short-lived certificate from the gateway's SSH "
            "user CA (GATEHOUSE_TOKEN_FILE exported as above):"
        )
        for line in textwrap.wrap(about, 76):
            _say(out, line)
        _say(out)
        key = shlex.quote(_shown(keys / "ci-bot"))
        _say(
            out,
            f"  {gatehouse} ssh-cert --config {config} --out {key} "
            f"--ssh-port {self.ssh_port}",
        )
        _say(
            out,
            f"  ssh -i {key} -p {self.ssh_port} -o UserKnownHostsFile={known} {where}",
        )

    def stop_database(self, database: DemoDatabase) -> None:
        """
        Stop the demo's PostgreSQL and say so.
        """
        try:
            database.stop(keep=self.keep)
        except pg.ClusterError as e:
            sys.stderr.write(f"{_PREFIX} stopping PostgreSQL: {e}\n")
            return
        if self.keep and database.base is not None:
            _say(self.out, f"{_PREFIX} PostgreSQL files kept in {database.base}")
        if database.port:
            recordings = _shown(self.path("recordings"))
            _say(self.out, f"{_PREFIX} stopped; recordings kept in {recordings}")
