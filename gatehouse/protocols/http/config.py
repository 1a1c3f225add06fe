"""
Options of HTTP and Kubernetes listeners and targets, validated at load
time.

A listener (C{protocol: kubernetes} or C{protocol: http})::

    listeners:
      - name: kube
        protocol: kubernetes
        port: 6443
        tls: {certificate: /etc/gatehouse/gw.pem, key: /etc/gatehouse/gw.key}
        options:
          target: prod               # requests without a /targets/NAME prefix
          max_header_bytes: 16KiB    # request line and headers
          max_body_bytes: 64MiB      # a request body above it: 413
          record_body_bytes: 1MiB    # of each body, recorded (the cap is recorded)
          idle_timeout: 10m          # a connection with no request in flight
          authentication_timeout: 30s
          max_connections: 1000

Clients name the target by a path prefix (C{https://gw:6443/targets/prod},
which C{gatehouse kubeconfig} writes), or use the listener's C{target}.

A target::

    targets:
      - name: prod
        protocol: kubernetes
        allow_groups: [sre, agents]
        options:
          url: https://10.0.0.1:6443          # the API server
          ca_file: /etc/gatehouse/prod-ca.pem  # its CA (default: system roots)
          client_certificate: /etc/gatehouse/prod-gw.pem   # and client_key, or:
          token_file: /var/run/secrets/gatehouse/token     # re-read on change
          impersonate_group_prefix: "gatehouse:"          # before each group
          connect_timeout: 10s

An C{http} target is the same without the impersonation, plus
C{headers}: each C{{name: X-Api-Key, file: FILE}} is sent upstream with
the file's content (stripped), and nothing the client sent by that name.
"""

from __future__ import annotations

import attrs

from gatehouse.config import ConfigSection
from gatehouse.limits import connection_limits
from gatehouse.protocols import LimitedListenerOptions, TargetOptions
from gatehouse.protocols.http.tls_policy import UpstreamPolicy

#: the path prefix that names a target: /targets/NAME/...
TARGET_PREFIX = "/targets/"

_KiB = 1024
_MiB = 1024 * _KiB


@attrs.frozen
class HTTPListenerOptions(LimitedListenerOptions):
    """Options of one HTTP or Kubernetes listener."""

    #: the target of requests whose path has no /targets/NAME prefix
    target: str | None = None
    #: the request line and headers together
    max_header_bytes: int = 16 * _KiB
    #: a request body larger than this is refused (413)
    max_body_bytes: int = 64 * _MiB
    #: bytes of each request or response body recorded (the rest is
    #: counted, and the cap recorded)
    record_body_bytes: int = 1 * _MiB
    #: seconds a connection may wait for its next request
    idle_timeout: float = 600.0
    #: plain HTTP instead of TLS (tests and loopback only)
    allow_cleartext: bool = False


@attrs.frozen
class InjectedHeader:
    """A header sent upstream with the content of a file."""

    name: str
    file: str


@attrs.frozen
class HTTPTargetOptions(TargetOptions):
    """Where an HTTP service or an API server is and how to reach it."""

    url: str
    ca: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None
    token_file: str | None = None
    headers: tuple[InjectedHeader, ...] = ()
    impersonate_group_prefix: str = ""
    connect_timeout: float = 10.0
    #: the name the upstream's certificate must carry, when not the URL's host
    server_name: str | None = None


def parse_listener_options(options: ConfigSection) -> HTTPListenerOptions:
    """Validate an HTTP or Kubernetes listener's C{options}."""
    return HTTPListenerOptions(
        target=options.string("target"),
        max_header_bytes=options.size("max_header_bytes", 16 * _KiB, minimum=_KiB),
        max_body_bytes=options.size("max_body_bytes", 64 * _MiB, minimum=1),
        record_body_bytes=options.size("record_body_bytes", 1 * _MiB),
        idle_timeout=options.duration("idle_timeout", 600.0, positive=True),
        allow_cleartext=options.boolean("allow_cleartext"),
        **connection_limits(options),
    )


def parse_target_options(
    options: ConfigSection, *, kubernetes: bool
) -> HTTPTargetOptions:
    """Validate an HTTP or Kubernetes target's C{options}."""
    url = options.url("url", required=True) or ""
    ca = options.readable_file("ca_file")
    certificate = options.readable_file("client_certificate")
    key = options.readable_file("client_key")
    if (certificate is None) != (key is None):
        options.problem(
            "client_certificate and client_key go together",
            "client_key" if key is None else "client_certificate",
        )
    token_file = options.readable_file("token_file")
    headers: list[InjectedHeader] = []
    if kubernetes:
        prefix = options.string("impersonate_group_prefix", default="") or ""
    else:
        prefix = ""
        for entry in options.sections("headers"):
            name = entry.string("name", required=True) or ""
            file = entry.readable_file("file", required=True) or ""
            if name.lower() in _RESERVED:
                entry.problem(f"{name!r} is set by the gateway", "name")
            headers.append(InjectedHeader(name, file))
            entry.finish()
    parsed = HTTPTargetOptions(
        url=url,
        ca=ca,
        client_certificate=certificate,
        client_key=key,
        token_file=token_file,
        headers=tuple(headers),
        impersonate_group_prefix=prefix,
        connect_timeout=options.duration("connect_timeout", 10.0, positive=True),
        server_name=options.string("server_name"),
    )
    if url.startswith("https://") and options.problem_count == 0:
        try:
            UpstreamPolicy(parsed)
        except Exception as e:  # pyOpenSSL and cryptography raise several kinds
            options.problem(
                f"the TLS files do not load: {e}",
                "client_certificate" if certificate else "ca_file",
            )
    return parsed


_RESERVED = frozenset({"host", "content-length", "transfer-encoding", "connection"})
