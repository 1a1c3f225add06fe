"""
Kubernetes API requests as the API server reads them (sans-IO).

L{classify} turns an HTTP method and the raw request-target into a
L{KubeRequest}: verb, API group, version, resource, subresource,
namespace and name, derived the way kube-apiserver's C{RequestInfo}
(C{k8s.io/apiserver/pkg/endpoints/request/requestinfo.go}) derives them
from Go's decoded C{URL.Path} and C{URL.Query()}:

  - C{/api/v1/...} is the core group; C{/apis/GROUP/VERSION/...} the
    others; shorter paths (C{/api}, C{/api/v1}, C{/apis}, C{/apis/G},
    C{/apis/G/V}), C{/version}, C{/openapi/...}, C{/healthz} and every
    other path are non-resource requests, whose verb is the lowercase
    method.
  - C{namespaces/NS/RESOURCE/...} is namespaced; C{namespaces/NS} itself
    (and its C{status} and C{finalize} subresources) has namespace C{NS},
    resource C{namespaces} and name C{NS}, as the API server's
    authorizer sees it.
  - A GET without a name is a C{list}, or a C{watch} with C{watch=true}
    or the legacy C{/watch/} path prefix; a DELETE without a name is a
    C{deletecollection}.  A list or watch with the field selector
    C{metadata.name=N} names C{N}, as RequestInfo does.
  - HEAD reads as GET.  The subresources C{exec}, C{attach},
    C{portforward}, C{log} and C{proxy} get verbs of their own
    (L{KubeRequest.verb}); L{KubeRequest.api_verb} keeps the verb the
    API server's RBAC sees (C{create} for a POST to C{pods/x/exec},
    C{get} for its WebSocket GET).

Anything the API server (Go's C{net/http}, its router and RequestInfo)
could read differently from this module is refused with
L{AmbiguousRequest} (the caller answers 400 with a Status): encoded C{/},
C{\\}, C{%} or control characters, dot segments, empty segments (C{//}),
backslashes, C{;} anywhere, fragments, non-UTF-8, absolute-form and
C{*} targets, a query Go would drop part of (C{;}, bad escapes), a
repeated security-relevant parameter (C{watch}, C{dryRun},
C{fieldManager}, C{container}, C{stdin}, ...; C{command} and C{ports}
may repeat), a case variant of a known parameter (C{Watch=true}, which
Go ignores but another reader may not), boolean values other than
C{true}, C{false}, C{1}, C{0} (Go reads C{watch=} and C{watch=no} as
true), names that are not path-segment names, namespaces that are not
DNS labels, resources, subresources, groups and versions in anything but
lowercase, extra path after a subresource other than C{proxy}, the
retired C{/proxy/} path prefix, and methods the API server does not
serve (TRACE, CONNECT, OPTIONS, lowercase methods, ...).  Percent-escapes
of other characters are decoded, as Go decodes them (C{%73ecrets} is
C{secrets}).

Trailing slash: RequestInfo trims it (C{/api/v1/namespaces/shop/pods/}
is a list of pods to the authorizer) while go-restful's router does not
(there it can match C{pods/{name}} with an empty name), so a trailing
slash on any path under C{/api/} or C{/apis/} is refused (kubectl never
sends one), but after the C{proxy} subresource, where both read the
same subresource and the slash belongs to the proxied path.  On other
non-resource paths (C{/logs/}) it is kept as written: there the
authorizer and the handler both read the path verbatim.

C{X-HTTP-Method-Override} and similar headers are not honoured by
kube-apiserver; the method classified is the request line's.
"""

from __future__ import annotations

import re
import shlex
from urllib.parse import quote

import attrs

__all__ = [
    "BOOLEAN_PARAMETERS",
    "CLUSTER_SCOPED",
    "METHODS",
    "SINGLE_PARAMETERS",
    "UPGRADE_VERBS",
    "VERBS",
    "AmbiguousRequest",
    "KubeRequest",
    "classify",
]

#: Methods kube-apiserver serves; others are refused (405).
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"})
#: Resources without a namespace, of the core and common groups: a list of
#: them reads no namespace.  Others (custom resources) are assumed
#: namespaced when listed without one.
CLUSTER_SCOPED = frozenset(
    (
        "namespaces nodes persistentvolumes clusterroles clusterrolebindings "
        "customresourcedefinitions storageclasses priorityclasses apiservices "
        "componentstatuses certificatesigningrequests volumeattachments "
        "validatingwebhookconfigurations mutatingwebhookconfigurations "
        "validatingadmissionpolicies validatingadmissionpolicybindings "
        "csidrivers csinodes ingressclasses runtimeclasses flowschemas "
        "prioritylevelconfigurations tokenreviews subjectaccessreviews "
        "selfsubjectaccessreviews selfsubjectrulesreviews selfsubjectreviews "
        "ipaddresses servicecidrs"
    ).split()
)
#: Every gatehouse verb of a resource request.
RESOURCE_VERBS = frozenset(
    {"get", "list", "watch", "create", "update", "patch", "delete"}
    | {"deletecollection", "exec", "attach", "portforward", "proxy", "log"}
)
#: Every verb a request can have (non-resource requests: the method).
VERBS = RESOURCE_VERBS | frozenset(m.lower() for m in METHODS)
#: Verbs whose request is upgraded to a stream (WebSocket or SPDY).
UPGRADE_VERBS = frozenset({"exec", "attach", "portforward"})
#: Subresources with a verb of their own, and the methods they take.
_SUBRESOURCE_VERBS = {
    "exec": frozenset({"GET", "POST"}),
    "attach": frozenset({"GET", "POST"}),
    "portforward": frozenset({"GET", "POST"}),
    "log": frozenset({"GET", "HEAD"}),
    "proxy": METHODS,
}
#: Query parameters Go reads as booleans (first value; C{0}/C{false} false,
#: anything else, even empty, true): only these spellings are accepted.
BOOLEAN_PARAMETERS = frozenset(
    {"watch", "stdin", "stdout", "stderr", "tty", "follow", "previous"}
    | {"timestamps", "allowWatchBookmarks", "sendInitialEvents", "force"}
    | {"orphanDependents", "insecureSkipTLSVerifyBackend", "pretty"}
)
_BOOLEANS = {"true": True, "1": True, "false": False, "0": False}
#: Query parameters the API server reads once: a repeat is refused (Go
#: takes the first value; another reader may take the last).
SINGLE_PARAMETERS = BOOLEAN_PARAMETERS | frozenset(
    {"dryRun", "fieldManager", "fieldValidation", "container", "labelSelector"}
    | {"fieldSelector", "resourceVersion", "resourceVersionMatch", "limit"}
    | {"continue", "timeoutSeconds", "timeout", "propagationPolicy"}
    | {"gracePeriodSeconds", "tailLines", "sinceSeconds", "sinceTime"}
    | {"limitBytes", "includeObject", "path", "port"}
)
#: Parameters that may repeat (their order is kept).
_REPEATABLE = frozenset({"command", "ports"})
_KNOWN_PARAMETERS = {p.lower(): p for p in SINGLE_PARAMETERS | _REPEATABLE}

# Raw bytes allowed in a request-target (RFC 3986 pchar, "/", "?", "%"),
# without ";" (Go's query parser drops pairs holding one; some proxies
# strip path parameters) and without "#".
_TARGET = re.compile(rb"[A-Za-z0-9\-._~!$&'()*+,=:@/?%]*")
_ESCAPE = re.compile(rb"%([0-9A-Fa-f]{2})")
_BAD_ESCAPE = re.compile(rb"%(?![0-9A-Fa-f]{2})")
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(
    r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*"
)
_LOWER_WORD = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
# A name: printable ASCII but "/", "%", "\\", ";" (IsValidPathSegmentName
# and what a proxy or the router could split on), not "." or "..".
_NAME = re.compile(r"[!-~]+")
_NAME_FORBIDDEN = frozenset("/%\\;?#")
_SPECIAL_VERBS = frozenset({"watch", "proxy"})
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_API_PREFIXES = frozenset({"api", "apis"})


class AmbiguousRequest(ValueError):
    """
    A request the API server could read differently from gatehouse (or
    would refuse): answered with a Status of C{code} (400, or 405 for a
    method it does not serve) and C{str(self)} as its message.
    """

    def __init__(self, message: str, code: int = 400) -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen
class KubeRequest:
    """
    One Kubernetes API request, as the API server reads it.

    @ivar method: the HTTP method (C{"GET"}, ...).
    @ivar path: the decoded path (canonical: checked, nothing to clean).
    @ivar query: the decoded C{(name, value)} pairs, in order.
    @ivar resource_request: False for discovery and other non-resource
        paths (C{/version}, C{/api}, C{/apis/G/V}, C{/openapi/v2}, ...).
    @ivar verb: the gatehouse verb (L{VERBS}): get, list, watch, create,
        update, patch, delete, deletecollection, exec, attach,
        portforward, proxy, log; for non-resource requests the lowercase
        method.
    @ivar api_verb: the verb RequestInfo gives the API server's
        authorizer (C{create} or C{get} for C{pods/exec}).
    @ivar api_prefix: C{"api"}, C{"apis"}, or C{""} (non-resource).
    @ivar group: the API group, C{""} for the core group.
    @ivar namespace: C{""} when cluster-scoped or across all namespaces.
    @ivar dry_run: C{dryRun=All}: the server changes nothing.
    @ivar field_manager: the C{fieldManager} parameter, if any.
    @ivar upgrade: exec, attach or portforward: a stream follows.
    @ivar rest: for C{proxy}: the path after the subresource (C{""} or
        C{"/metrics"}).
    @ivar target: the request-target as received (checked unambiguous).
    """

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    resource_request: bool
    verb: str
    api_verb: str
    api_prefix: str
    group: str
    version: str
    namespace: str
    resource: str
    subresource: str
    name: str
    dry_run: bool
    field_manager: str | None
    upgrade: bool
    rest: str = ""
    target: bytes = b""

    def values(self, parameter: str) -> tuple[str, ...]:
        """Every value of a query parameter, in order."""
        return tuple(v for k, v in self.query if k == parameter)

    def value(self, parameter: str) -> str | None:
        """The value of a query parameter (read once), or None."""
        found = self.values(parameter)
        return found[0] if found else None

    def flag(self, parameter: str) -> bool:
        """
        A boolean query parameter as Go reads it: absent, C{0} or C{false}
        (any case) is false, anything else true.
        """
        value = self.value(parameter)
        return value is not None and value.lower() not in ("0", "false")

    @property
    def container(self) -> str | None:
        """The container of an exec, attach or log request, if named."""
        return self.value("container")

    @property
    def command(self) -> tuple[str, ...]:
        """The command of an exec request (its words)."""
        return self.values("command")

    @property
    def qualified_resource(self) -> str:
        """The resource as kubectl names it: C{pods}, C{deployments.apps}."""
        if self.group:
            return f"{self.resource}.{self.group}"
        return self.resource

    def describe(self) -> str:
        """
        Short human text: C{"list pods -n shop"}, C{"delete
        deployments.apps/web -n shop"}, C{"exec shop/web-7 -c app: /bin/sh"}.
        """
        if not self.resource_request:
            return f"{self.verb} {self.path}"
        if self.verb in ("exec", "attach", "portforward", "log") and self.name:
            text = f"{self.verb} {_where(self.namespace, self.name)}"
            if self.container is not None:
                text += f" -c {self.container}"
            if self.verb == "log" and self.flag("follow"):
                text += " -f"
            if self.verb == "portforward" and self.values("ports"):
                text += " " + ",".join(self.values("ports"))
            if self.verb == "exec":
                text += ": " + _printable(shlex.join(self.command))
            return text
        what = self.qualified_resource
        if self.name:
            what += f"/{self.name}"
        if self.subresource:
            what += f"/{self.subresource}{self.rest}"
        text = f"{self.verb} {_printable(what)}"
        if self.namespace and not (self.resource == "namespaces" and self.name):
            text += f" -n {self.namespace}"
        elif not self.namespace and self.verb in ("list", "watch", "deletecollection"):
            text += "" if self.resource in CLUSTER_SCOPED else " -A"
        labels = self.value("labelSelector")
        if labels:
            text += f" -l {_printable(labels)}"
        fields = self.value("fieldSelector")
        if fields:
            text += f" --field-selector {_printable(fields)}"
        if self.dry_run:
            text += " --dry-run=server"
        return text

    def canonical_target(self) -> bytes:
        """The path and query re-encoded (what the API server will read)."""
        path = quote(self.path, safe="/:@!$&'()*+,=~")
        if not self.query:
            return path.encode("ascii")
        query = "&".join(
            f"{quote(k, safe='')}={quote(v, safe='')}" for k, v in self.query
        )
        return f"{path}?{query}".encode("ascii")


def _where(namespace: str, name: str) -> str:
    return f"{namespace}/{name}" if namespace else name


def _printable(text: str) -> str:
    """Text with control characters escaped (for one-line descriptions)."""
    if text.isprintable():
        return text
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in text)


def _decode(raw: bytes, where: str, *, plus: bool = False) -> str:
    """Percent-decode C{raw} as Go does, refusing what Go reads otherwise."""
    if _BAD_ESCAPE.search(raw):
        raise AmbiguousRequest(f"invalid percent-escape in the {where}")
    if plus:
        raw = raw.replace(b"+", b" ")
    decoded = _ESCAPE.sub(lambda m: bytes((int(m.group(1), 16),)), raw)
    try:
        text = decoded.decode("utf-8")
    except UnicodeDecodeError:
        raise AmbiguousRequest(f"the {where} is not UTF-8") from None
    if "\x00" in text:
        raise AmbiguousRequest(f"a NUL character in the {where}")
    return text


def _path_segments(raw: bytes) -> list[str]:
    """The decoded segments of the path, each checked unambiguous."""
    segments = []
    for part in raw.split(b"/")[1:]:
        segment = _decode(part, "path")
        if set(segment) & {"/", "\\", "%", ";", "?", "#"}:
            raise AmbiguousRequest(
                f"the path segment {part.decode('ascii')!r} encodes a separator"
            )
        if not segment.isprintable() or " " in segment:
            raise AmbiguousRequest("a control or space character in the path")
        if segment in (".", ".."):
            raise AmbiguousRequest("dot segments in the path")
        segments.append(segment)
    return segments


def _query(raw: bytes) -> tuple[tuple[str, str], ...]:
    """The decoded query pairs, checked: Go's C{URL.Query()} reads the same."""
    pairs: list[tuple[str, str]] = []
    seen: set[str] = set()
    for piece in raw.split(b"&"):
        if not piece:
            continue  # Go skips empty pieces ("a=1&&b=2")
        key_raw, _, value_raw = piece.partition(b"=")
        key = _decode(key_raw, "query", plus=True)
        value = _decode(value_raw, "query", plus=True)
        if not key:
            raise AmbiguousRequest("a query parameter without a name")
        known = _KNOWN_PARAMETERS.get(key.lower())
        if known is not None and known != key:
            raise AmbiguousRequest(
                f"query parameter {key!r}: did you mean {known!r}? (case matters)"
            )
        if key in SINGLE_PARAMETERS and key in seen:
            raise AmbiguousRequest(f"query parameter {key!r} given twice")
        if key in BOOLEAN_PARAMETERS and value not in _BOOLEANS:
            raise AmbiguousRequest(
                f"query parameter {key!r}={value!r}: expected true or false"
            )
        seen.add(key)
        pairs.append((key, value))
    return tuple(pairs)


def _check_target(target: bytes) -> tuple[bytes, bytes]:
    """The raw path and query of an origin-form target, or refuse."""
    if not target.startswith(b"/"):
        raise AmbiguousRequest(
            "the request target must be a path (no absolute form, no '*')"
        )
    if b"#" in target:
        raise AmbiguousRequest("a fragment in the request target")
    if b"\\" in target:
        raise AmbiguousRequest("a backslash in the request target")
    if b";" in target:
        raise AmbiguousRequest("a ';' in the request target")
    if _TARGET.fullmatch(target) is None:
        raise AmbiguousRequest("characters outside RFC 3986 in the request target")
    path, _, query = target.partition(b"?")
    if b"//" in path:
        raise AmbiguousRequest("an empty path segment ('//')")
    return path, query


def _check_name(name: str, what: str) -> None:
    if (
        _NAME.fullmatch(name) is None
        or name in (".", "..")
        or not _NAME_FORBIDDEN.isdisjoint(name)
    ):
        raise AmbiguousRequest(f"{what} {name!r} is not a valid name")


def _check(pattern: re.Pattern[str], value: str, what: str, limit: int) -> None:
    if len(value) > limit or pattern.fullmatch(value) is None:
        raise AmbiguousRequest(f"{what} {value!r} is not valid")


def _name_from_fields(selector: str | None) -> str:
    """
    The name a field selector pins (C{metadata.name=N} or C{==}, alone or
    in a conjunction), as RequestInfo reads it; C{""} if none.  Escapes or
    spaces near C{metadata.name} are refused (Go's reading is subtle).
    """
    if not selector or "metadata.name" not in selector:
        return ""
    if "\\" in selector or not selector.isprintable() or " " in selector:
        raise AmbiguousRequest("escapes or spaces in a field selector on metadata.name")
    for term in selector.split(","):
        for op in ("!=", "==", "="):
            field, found, value = term.partition(op)
            if found:
                if field == "metadata.name" and op != "!=":
                    _check_name(value, "name")
                    return value
                break
    return ""


@attrs.frozen
class _Common:
    """What every request has, whatever its path."""

    method: str
    path: str
    query: tuple[tuple[str, str], ...]
    dry_run: bool
    field_manager: str | None
    target: bytes

    def first(self, parameter: str) -> str | None:
        return next((v for k, v in self.query if k == parameter), None)

    def request(
        self,
        verb: str,
        api_verb: str,
        api_prefix: str = "",
        group: str = "",
        version: str = "",
        namespace: str = "",
        resource: str = "",
        subresource: str = "",
        name: str = "",
        rest: str = "",
    ) -> KubeRequest:
        return KubeRequest(
            method=self.method,
            path=self.path,
            query=self.query,
            resource_request=bool(resource),
            verb=verb,
            api_verb=api_verb,
            api_prefix=api_prefix,
            group=group,
            version=version,
            namespace=namespace,
            resource=resource,
            subresource=subresource,
            name=name,
            dry_run=self.dry_run,
            field_manager=self.field_manager,
            upgrade=verb in UPGRADE_VERBS,
            rest=rest,
            target=self.target,
        )


def classify(method: str, target: bytes) -> KubeRequest:
    """
    The request as the API server reads it, or L{AmbiguousRequest}.

    @param method: the request line's method.
    @param target: the raw request-target bytes.
    """
    if method not in METHODS:
        raise AmbiguousRequest(f"method {method!r} is not served", code=405)
    raw_path, raw_query = _check_target(target)
    segments = _path_segments(raw_path)
    query = _query(raw_query)
    dry_run_values = [v for k, v in query if k == "dryRun"]
    if any(v != "All" for v in dry_run_values):
        raise AmbiguousRequest("dryRun must be All")
    common = _Common(
        method=method,
        path="/" + "/".join(segments),
        query=query,
        dry_run=bool(dry_run_values),
        field_manager=next((v for k, v in query if k == "fieldManager"), None),
        target=target,
    )
    trailing = len(segments) > 1 and segments[-1] == ""
    parts = segments[:-1] if trailing else segments
    if parts == [""]:
        parts = []
    if "" in parts:
        raise AmbiguousRequest("an empty path segment ('//')")
    if parts and parts[0].lower() in _API_PREFIXES and parts[0] not in _API_PREFIXES:
        raise AmbiguousRequest(f"/{parts[0]}: the API prefixes are lowercase")
    if len(parts) < 3 or parts[0] not in _API_PREFIXES:
        return _non_resource(common, parts, trailing)
    prefix, rest = parts[0], parts[1:]
    group = ""
    if prefix == "apis":
        if len(rest) < 3:
            return _non_resource(common, parts, trailing)
        group, rest = rest[0], rest[1:]
        _check(_DNS_SUBDOMAIN, group, "API group", 253)
    version, rest = rest[0], rest[1:]
    _check(_LOWER_WORD, version, "API version", 63)
    return _resource(common, prefix, group, version, rest, trailing)


_TRAILING = (
    "a trailing slash: the API server's authorizer and router read it differently"
)


def _non_resource(common: _Common, parts: list[str], trailing: bool) -> KubeRequest:
    if parts[:1] == ["api"] or parts[:1] == ["apis"]:
        if trailing:
            raise AmbiguousRequest(_TRAILING)
        if parts[0] == "apis" and len(parts) >= 2:
            _check(_DNS_SUBDOMAIN, parts[1], "API group", 253)
        if len(parts) >= 2 + (parts[0] == "apis"):
            _check(_LOWER_WORD, parts[-1], "API version", 63)
    verb = common.method.lower()
    return common.request(verb, verb)


_METHOD_VERBS = {
    "GET": "get",
    "HEAD": "get",
    "POST": "create",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}


def _resource(
    common: _Common,
    prefix: str,
    group: str,
    version: str,
    rest: list[str],
    trailing: bool,
) -> KubeRequest:
    """A resource request: C{rest} is the path after the version."""
    method = common.method
    if rest[0] in _SPECIAL_VERBS:
        if rest[0] == "proxy":
            raise AmbiguousRequest(
                "the /proxy/ path prefix is retired; use the proxy subresource"
            )
        if len(rest) < 2:
            raise AmbiguousRequest("a watch path without a resource")
        if method not in ("GET", "HEAD"):
            raise AmbiguousRequest(f"{method} on a watch path", code=405)
        verb = "watch"
        rest = rest[1:]
    else:
        verb = _METHOD_VERBS[method]
    namespace = ""
    if rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        _check(_DNS_LABEL, namespace, "namespace", 63)
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = rest[2] if len(rest) > 2 else ""
    _check(_LOWER_WORD, resource, "resource", 253)
    if name:
        _check_name(name, "name")
    if subresource:
        _check(_LOWER_WORD, subresource, "subresource", 63)
    extra = rest[3:]
    if subresource != "proxy":
        if extra:
            raise AmbiguousRequest(f"path after the subresource {subresource!r}")
        if trailing:
            raise AmbiguousRequest(_TRAILING)
    if verb == "watch" and subresource:
        raise AmbiguousRequest("a subresource on a watch path")
    if not name and verb == "get":
        watch = common.first("watch") or "false"
        verb = "watch" if _BOOLEANS[watch] else "list"
        name = _name_from_fields(common.first("fieldSelector"))
    if not name and verb == "delete":
        verb = "deletecollection"
    api_verb = verb
    if subresource in _SUBRESOURCE_VERBS:
        if method not in _SUBRESOURCE_VERBS[subresource]:
            raise AmbiguousRequest(f"{method} on {subresource}", code=405)
        verb = subresource
    return common.request(
        verb=verb,
        api_verb=api_verb,
        api_prefix=prefix,
        group=group,
        version=version,
        namespace=namespace,
        resource=resource,
        subresource=subresource,
        name=name,
        rest="".join("/" + p for p in extra) + ("/" if trailing else ""),
    )
