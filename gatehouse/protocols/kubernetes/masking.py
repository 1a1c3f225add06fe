"""
Masking of Kubernetes response bodies (sans-IO, streaming, bounded).

L{SecretMasker} is fed a response body in chunks as it arrives and gives
back the bytes to send on: the values of every C{Secret}'s C{data} and
C{stringData} replaced by a placeholder (keys kept; C{data} values by
L{DATA_PLACEHOLDER}, the base64 of C{********}, so clients still decode
them), and the C{kubectl.kubernetes.io/last-applied-configuration}
annotation of a Secret masked the same way inside (it holds the applied
Secret, values included).  Secrets are found:

  - by kind, anywhere in a document: a C{Secret}, the items of a
    C{SecretList}, a Secret in a C{List} of mixed kinds, in a C{Table}'s
    C{rows[].object}, in a watch event's C{object};
  - by the request: for a request on the resource C{secrets} (any group)
    every object in the response is taken for a Secret, whatever its
    kind says or omits (list items carry no kind; a Table's row objects
    may be C{PartialObjectMetadata}, whose annotations still hold the
    last applied configuration).

Documents are handled one at a time, each at most C{limit} bytes: for a
watch, one event (one line: the API server writes each event as one line
of compact JSON); for a response on C{secrets}, one top-level member of
the body, and one element of each array (a list's C{items}, a Table's
C{rows}), so a list of any length is masked item by item; otherwise the
whole body (Secrets found by kind can be anywhere in it).  A piece
holding nothing to mask goes out byte for byte as it came; one with
masked values is re-serialised (compact, key order and number spellings
kept, Go's escaping): semantically equal but for the masked values, so
the caller must not forward the upstream C{Content-Length} of a masked
body.

Fail closed: a body that is not JSON (protobuf, YAML, a missing content
type with a body, another charset), a document that does not parse
(duplicate keys, NaN, truncated, nested too deep) or is over the limit
raises L{MaskingRefused}; the caller answers a Status 500 or ends the
stream, and sends nothing of that document.

Request bodies (for the recording: C{kubectl create secret} sends the
values) are masked the same way: a create, update or merge patch of a
Secret is a Secret; a JSON Patch has every operation's value masked;
server-side apply's C{application/apply-patch+yaml} is read when it is
JSON (as kubectl sends it) and refused otherwise.

The core's value detectors (L{gatehouse.policy.masking.Masker}) apply to
every JSON string value (not keys) when a C{values} masker is given.
"""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Callable
from typing import Protocol

from gatehouse.protocols.kubernetes.request import KubeRequest
from gatehouse.protocols.kubernetes.status import go_json_string

__all__ = [
    "DATA_PLACEHOLDER",
    "DEFAULT_LIMIT",
    "JSON_MEDIA",
    "LAST_APPLIED",
    "PLACEHOLDER",
    "MaskingRefused",
    "SecretMasker",
    "ValueMasker",
    "is_json_media",
    "needs_secret_masking",
]

#: What a C{stringData} value (and text inside annotations) becomes.
PLACEHOLDER = "********"
#: What a C{data} value becomes: base64 of L{PLACEHOLDER}.
DATA_PLACEHOLDER = base64.b64encode(PLACEHOLDER.encode()).decode()
#: The largest document (a body, or one watch event) masked, in bytes.
DEFAULT_LIMIT = 32 * 1024 * 1024
#: The annotation kubectl apply keeps the applied object in.
LAST_APPLIED = "kubectl.kubernetes.io/last-applied-configuration"


class MaskingRefused(ValueError):
    """
    A body that cannot be masked safely: withhold it (fail closed).  A
    L{ValueError}, as the HTTP listener's body filters raise.
    """


class ValueMasker(Protocol):
    """What masks values inside text (L{gatehouse.policy.masking.Masker})."""

    def mask_text(self, value: str) -> tuple[str, int]:
        """The masked text and the number of occurrences masked."""
        ...


def needs_secret_masking(request: KubeRequest) -> bool:
    """
    Whether the response to C{request} may hold Secret values the API
    server sends in the clear: any request on the resource C{secrets}.
    (Other responses can be masked too, defensively: Secrets are found by
    kind in them.)
    """
    return request.resource_request and request.resource == "secrets"


class _Number(str):
    """A JSON number, kept as it was written."""


def _pairs(pairs: list[tuple[str, object]]) -> dict[str, object]:
    found = dict(pairs)
    if len(found) != len(pairs):
        raise MaskingRefused("a JSON object with a key twice")
    return found


def _constant(name: str) -> object:
    raise MaskingRefused(f"{name} is not JSON")


def _parse(text: str) -> object:
    try:
        return json.loads(
            text,
            object_pairs_hook=_pairs,
            parse_int=_Number,
            parse_float=_Number,
            parse_constant=_constant,
        )
    except (ValueError, RecursionError) as e:
        raise MaskingRefused(f"not a JSON document: {e}") from None


def _serialise(value: object) -> str:
    """Compact JSON as Go writes it (numbers as they were written)."""
    if isinstance(value, _Number):
        return str(value)
    if isinstance(value, str):
        return go_json_string(value)
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{go_json_string(k)}:{_serialise(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(_serialise(v) for v in value) + "]"
    raise TypeError(f"not a decoded JSON value: {value!r}")


def _mask_map(secret: dict[str, object], key: str, placeholder: str) -> int:
    values = secret.get(key)
    if values is None:
        return 0
    if not isinstance(values, dict):
        secret[key] = placeholder  # malformed: withhold it whole
        return 1
    count = 0
    for name, value in values.items():
        if value is not None:
            values[name] = placeholder
            count += 1
    return count


def _mask_secret(secret: dict[str, object], walked: bool) -> int:
    """
    Mask one Secret's values in place; how many.  C{walked}: every object
    inside it is masked as a Secret too (an annotations map among them,
    which masks its own last applied configuration).
    """
    count = _mask_map(secret, "data", DATA_PLACEHOLDER)
    count += _mask_map(secret, "stringData", PLACEHOLDER)
    annotations: object = secret
    if not walked:
        metadata = secret.get("metadata")
        annotations = (
            metadata.get("annotations") if isinstance(metadata, dict) else None
        )
    if isinstance(annotations, dict):
        applied = annotations.get(LAST_APPLIED)
        if isinstance(applied, str):
            annotations[LAST_APPLIED] = _mask_applied(applied)
            count += 1
    return count


def _mask_applied(text: str) -> str:
    """The last applied configuration with its Secret values masked."""
    try:
        applied = _parse(text)
    except MaskingRefused:
        return PLACEHOLDER
    if not isinstance(applied, dict):
        return PLACEHOLDER
    _mask_secrets(applied, True)
    return _serialise(applied)


def _mask_patch(operations: list[object]) -> int:
    """
    Mask the values of a JSON Patch (RFC 6902) on a Secret: every value
    an operation carries (the paths under C{/data} hold base64).
    """
    count = 0
    for operation in operations:
        if not isinstance(operation, dict) or "value" not in operation:
            continue
        path = operation.get("path")
        encoded = isinstance(path, str) and path.startswith("/data")
        value = operation["value"]
        if isinstance(value, dict) and path in ("/data", "/stringData"):
            for name, item in value.items():
                value[name] = DATA_PLACEHOLDER if encoded else PLACEHOLDER
                count += item is not None
        elif isinstance(value, dict | list):
            count += _mask_secrets(value, True)
        elif value is not None:
            operation["value"] = DATA_PLACEHOLDER if encoded else PLACEHOLDER
            count += 1
    return count


def _mask_secrets(document: object, all_secrets: bool, whole: bool = True) -> int:
    """
    Mask every Secret in a decoded document, in place; how many values.
    With C{all_secrets} every object is taken for a Secret, and a C{whole}
    document that is an array for a JSON Patch of one.
    """
    count = 0
    if all_secrets and whole and isinstance(document, list):
        return _mask_patch(document)
    stack: list[tuple[object, bool]] = [(document, all_secrets)]
    while stack:
        node, secret = stack.pop()
        if isinstance(node, dict):
            kind = node.get("kind")
            if secret or kind == "Secret":
                count += _mask_secret(node, secret)
            inner = secret or kind == "SecretList"
            stack.extend(
                (v, inner) for v in node.values() if isinstance(v, dict | list)
            )
        elif isinstance(node, list):
            stack.extend((v, secret) for v in node if isinstance(v, dict | list))
    return count


def _mask_values(document: object, values: ValueMasker) -> tuple[object, int]:
    """Run the value detectors over every string value (not keys)."""
    count = 0

    def mask(value: object) -> object:
        nonlocal count
        if isinstance(value, str) and not isinstance(value, _Number):
            masked, hits = values.mask_text(value)
            count += hits
            return masked if hits else value
        return value

    document = mask(document)
    stack: list[object] = [document]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            for key, value in node.items():
                node[key] = mask(value)
            stack.extend(v for v in node.values() if isinstance(v, dict | list))
        elif isinstance(node, list):
            node[:] = [mask(v) for v in node]
            stack.extend(v for v in node if isinstance(v, dict | list))
    return document, count


#: Media types read as JSON: responses, and request bodies (the patch
#: types; server-side apply's YAML when it is JSON, as kubectl sends it).
JSON_MEDIA = frozenset(
    {
        "application/json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/json-patch+json",
        "application/apply-patch+yaml",
    }
)


def is_json_media(content_type: str | None) -> bool:
    """
    Whether C{content_type} is JSON in UTF-8 (any other parameters): what
    L{SecretMasker} can mask.  A caller that must mask a response of
    another type refuses it before its head goes out (and asks for JSON:
    C{Accept: application/json} for requests on C{secrets}).
    """
    if not content_type:
        return False
    media, *parameters = content_type.split(";")
    if media.strip().lower() not in JSON_MEDIA:
        return False
    for parameter in parameters:
        name, _, value = parameter.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip(
            '"'
        ).lower() not in (
            "utf-8",
            "utf8",
        ):
            return False
    return True


class SecretMasker:
    """
    Masks one response body, fed in chunks (see the module docstring):
    C{feed} and C{end} (or C{close}) as the HTTP listener's C{BodyFilter}
    asks, raising L{MaskingRefused} (a L{ValueError}) to cut the body.

    @ivar masked: how many values have been masked so far.
    """

    def __init__(
        self,
        request: KubeRequest,
        content_type: str | None,
        *,
        limit: int = DEFAULT_LIMIT,
        values: ValueMasker | None = None,
    ) -> None:
        """
        @param request: the request the body answers.
        @param content_type: the response's C{Content-Type}.
        @param limit: the largest document (body, or watch event) in bytes.
        @param values: value detectors for every string, if any.
        """
        self._json = is_json_media(content_type)
        self._content_type = content_type
        self._all_secrets = needs_secret_masking(request)
        self._watch = request.verb == "watch"
        self._limit = limit
        self._values = values
        self._buffer = bytearray()
        self._closed = False
        self._stream: _ObjectStream | None = None
        if self._all_secrets and not self._watch:
            self._stream = _ObjectStream(self._document, limit)
        self.masked = 0

    def _check_json(self) -> None:
        if not self._json:
            raise MaskingRefused(
                f"cannot mask a {self._content_type or 'untyped'} body; JSON only"
            )

    def feed(self, data: bytes) -> bytes:
        """Take the next chunk; the masked bytes ready to send (maybe none)."""
        if self._closed:
            raise MaskingRefused("fed after close")
        if not data:
            return b""
        self._check_json()
        if self._stream is not None:
            return self._stream.feed(data)
        self._buffer += data
        if not self._watch:
            if len(self._buffer) > self._limit:
                raise MaskingRefused(f"a document over {self._limit} bytes")
            return b""
        end = self._buffer.rfind(b"\n")
        if end < 0:
            if len(self._buffer) > self._limit:
                raise MaskingRefused(f"a watch event over {self._limit} bytes")
            return b""
        lines = bytes(self._buffer[: end + 1])
        del self._buffer[: end + 1]
        out = []
        for line in lines.split(b"\n")[:-1]:
            if len(line) > self._limit:
                raise MaskingRefused(f"a watch event over {self._limit} bytes")
            out.append(self._document(line) + b"\n")
        return b"".join(out)

    def end(self) -> bytes:
        """The end of the body (the HTTP listener's C{BodyFilter.end})."""
        return self.close()

    def close(self) -> bytes:
        """The end of the body: the rest of the masked bytes."""
        if self._closed:
            return b""
        self._closed = True
        if self._stream is not None:
            return self._stream.close()
        rest = bytes(self._buffer)
        self._buffer.clear()
        if not rest:
            return b""
        if self._watch and rest.strip():
            raise MaskingRefused("the watch stream ended inside an event")
        return self._document(rest)

    def _document(
        self, raw: bytes, member: str | None = None, whole: bool = True
    ) -> bytes:
        """
        One document, masked (or as it came if nothing is): a whole body
        or watch event; or, of a body streamed (L{_ObjectStream}), the
        value of its top-level C{member}, or one element of an array.
        """
        if not raw.strip():
            return raw
        if self._values is None and not self._all_secrets and _no_secret(raw):
            return raw
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise MaskingRefused("a JSON document that is not UTF-8") from None
        document = _parse(text)
        try:
            if member is None:
                count = _mask_secrets(document, self._all_secrets, whole)
            else:
                # The member in its object: a Secret's data, stringData.
                holder: dict[str, object] = {member: document}
                count = _mask_secrets(holder, self._all_secrets, False)
                document = holder[member]
            if self._values is not None:
                document, hits = _mask_values(document, self._values)
                count += hits
            if not count:
                return raw
            out = _serialise(document)
        except RecursionError:
            raise MaskingRefused("a JSON document nested too deep") from None
        self.masked += count
        ending = raw[len(raw.rstrip()) :]
        return out.encode("utf-8") + ending


_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_STRUCTURE = re.compile(rb'["{}\[\]]')
_SCALAR = re.compile(rb"[^\s,\]}]+")
_SPACE = b" \t\r\n"
# States of an _ObjectStream: what comes next.
(
    _START,
    _FIRST_KEY,
    _KEY,
    _COLON,
    _VALUE,
    _IN_MEMBER,
    _FIRST_ELEMENT,
    _ELEMENT,
    _IN_ELEMENT,
    _AFTER_ELEMENT,
    _AFTER_MEMBER,
    _DONE,
    _WHOLE,
) = range(13)


class _ObjectStream:
    """
    A body whose top level is an object, masked member by member, and the
    elements of its array members (a list's C{items}, a Table's C{rows})
    one by one: memory holds one member or element at a time (at most
    C{limit} bytes), never the whole list.  What lies between them passes
    as it came.  A body whose top level is not an object is masked whole.

    @param mask: masks one piece: C{mask(raw, member, whole)}; C{member}
        is the top-level key whose value C{raw} is, C{whole} is False for
        an element of an array.
    """

    def __init__(
        self, mask: Callable[[bytes, str | None, bool], bytes], limit: int
    ) -> None:
        self._mask = mask
        self._limit = limit
        self._buffer = bytearray()
        self._state = _START
        self._keys: set[str] = set()
        self._key = ""
        self._start = 0  # where the value being scanned starts
        self._scan = 0  # how far it has been scanned
        self._depth = 0
        self._out: list[bytes] = []

    def feed(self, data: bytes) -> bytes:
        """The next chunk; what can be sent."""
        self._buffer += data
        return self._run(final=False)

    def close(self) -> bytes:
        """The end of the body: the rest, or L{MaskingRefused} if cut short."""
        out = self._run(final=True)
        if self._state == _WHOLE:
            return out + self._mask(bytes(self._buffer), None, True)
        if self._state == _START and not self._buffer:
            return out  # no body (or only spaces)
        if self._state != _DONE:
            raise MaskingRefused("the body ended inside a JSON document")
        return out

    def _run(self, final: bool) -> bytes:
        buffer = self._buffer
        position = 0
        while self._state != _WHOLE:
            if self._state in (_IN_MEMBER, _IN_ELEMENT):
                end = self._value_end(final)
                if end is None:
                    break
                piece = bytes(buffer[self._start : end])
                if len(piece) > self._limit:
                    raise MaskingRefused(f"a JSON document over {self._limit} bytes")
                if self._state == _IN_MEMBER:
                    self._out.append(self._mask(piece, self._key, True))
                    self._state = _AFTER_MEMBER
                else:
                    self._out.append(self._mask(piece, None, False))
                    self._state = _AFTER_ELEMENT
                position = end
                continue
            space = position
            while space < len(buffer) and buffer[space] in _SPACE:
                space += 1
            self._out.append(bytes(buffer[position:space]))
            position = space
            if position == len(buffer):
                break
            after = self._step(position, final)
            if after is None:
                break
            position = after
        del buffer[:position]
        self._start -= position
        self._scan -= position
        if len(buffer) > self._limit:
            raise MaskingRefused(f"a JSON document over {self._limit} bytes")
        out = b"".join(self._out)
        self._out.clear()
        return out

    def _emit(self, start: int, end: int, state: int) -> int:
        """Pass a token of the top level on, and move to C{state}."""
        self._out.append(bytes(self._buffer[start:end]))
        self._state = state
        return end

    def _begin(self, at: int, state: int) -> int:
        """Start scanning a value at C{at}."""
        self._start = self._scan = at
        self._depth = 0
        self._state = state
        return at

    def _step(self, at: int, final: bool) -> int | None:
        """
        Take the token at C{at} (not space): the position after it, or
        None to wait for more bytes.
        """
        state = self._state
        char = bytes(self._buffer[at : at + 1])
        if state == _START:
            if char != b"{":
                self._state = _WHOLE
                return at
            return self._emit(at, at + 1, _FIRST_KEY)
        if state == _FIRST_KEY and char == b"}":
            return self._emit(at, at + 1, _DONE)
        if state in (_FIRST_KEY, _KEY):
            return self._member_key(at, final)
        if state == _COLON and char == b":":
            return self._emit(at, at + 1, _VALUE)
        if state == _VALUE:
            if char == b"[" and self._key not in ("data", "stringData"):
                return self._emit(at, at + 1, _FIRST_ELEMENT)
            return self._begin(at, _IN_MEMBER)
        if state == _FIRST_ELEMENT and char == b"]":
            return self._emit(at, at + 1, _AFTER_MEMBER)
        if state in (_FIRST_ELEMENT, _ELEMENT):
            return self._begin(at, _IN_ELEMENT)
        if state == _AFTER_ELEMENT and char in (b",", b"]"):
            return self._emit(at, at + 1, _ELEMENT if char == b"," else _AFTER_MEMBER)
        if state == _AFTER_MEMBER and char in (b",", b"}"):
            return self._emit(at, at + 1, _KEY if char == b"," else _DONE)
        raise MaskingRefused(f"unexpected {char!r} in a JSON document")

    def _member_key(self, at: int, final: bool) -> int | None:
        match = _STRING.match(self._buffer, at)
        if match is None:
            if bytes(self._buffer[at : at + 1]) != b'"' or final:
                raise MaskingRefused("not a JSON object key")
            return None
        try:
            key = _parse(match.group().decode("utf-8"))
        except UnicodeDecodeError:
            raise MaskingRefused("a JSON document that is not UTF-8") from None
        assert isinstance(key, str)
        if key in self._keys:
            raise MaskingRefused("a JSON object with a key twice")
        self._keys.add(key)
        self._key = key
        return self._emit(at, match.end(), _COLON)

    def _value_end(self, final: bool) -> int | None:
        """Where the value being scanned ends, or None if not yet known."""
        buffer = self._buffer
        first = bytes(buffer[self._start : self._start + 1])
        if first == b'"':
            match = _STRING.match(buffer, self._start)
            if match is None:
                if final:
                    raise MaskingRefused("a JSON string without its end")
                return None
            return match.end()
        if first not in (b"{", b"["):
            match = _SCALAR.match(buffer, self._start)
            if match is None:
                raise MaskingRefused("not a JSON value")
            if match.end() == len(buffer) and not final:
                return None
            return match.end()
        while True:
            found = _STRUCTURE.search(buffer, self._scan)
            if found is None:
                self._scan = len(buffer)
                if final:
                    raise MaskingRefused("a JSON value without its end")
                return None
            at = found.start()
            if found.group() == b'"':
                string = _STRING.match(buffer, at)
                if string is None:
                    self._scan = at
                    if final:
                        raise MaskingRefused("a JSON string without its end")
                    return None
                self._scan = string.end()
                continue
            self._depth += 1 if found.group() in (b"{", b"[") else -1
            self._scan = at + 1
            if self._depth == 0:
                return self._scan


def _no_secret(raw: bytes) -> bool:
    """
    Whether C{raw} cannot hold a Secret by kind: no C{"Secret"} or
    C{"SecretList"} string spelled plainly, no C{\\u} escape that could
    spell one, and no NUL (UTF-16 or UTF-32 text, which Go does not read
    but would carry the values).
    """
    return b'"Secret' not in raw and b"\\u" not in raw and b"\x00" not in raw
