"""
Masking of Secret values in Kubernetes response bodies
(L{gatehouse.protocols.kubernetes.masking}).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterator
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.trial.unittest import SynchronousTestCase

from gatehouse.policy.masking import Masker, MaskingRule
from gatehouse.protocols.kubernetes.masking import (
    DATA_PLACEHOLDER,
    LAST_APPLIED,
    PLACEHOLDER,
    MaskingRefused,
    SecretMasker,
    is_json_media,
    needs_secret_masking,
)
from gatehouse.protocols.kubernetes.request import KubeRequest, classify

JSON = "application/json"
GET_SECRET = classify("GET", b"/api/v1/namespaces/shop/secrets/db")
LIST_SECRETS = classify("GET", b"/api/v1/namespaces/shop/secrets")
WATCH_SECRETS = classify("GET", b"/api/v1/secrets?watch=true")
LIST_WIDGETS = classify("GET", b"/apis/example.com/v1/namespaces/shop/widgets")
WATCH_WIDGETS = classify("GET", b"/apis/example.com/v1/widgets?watch=1")
GET_CONFIGMAP = classify("GET", b"/api/v1/namespaces/shop/configmaps/c")

# A marker no generated name, key or fixed word contains.
MARK = "Zq9"
names = st.text("abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12)
secret_values = st.builds(
    lambda a, b: MARK + a + b,
    st.text(min_size=0, max_size=10),
    st.text('ABCDEFGHIJKLMNOPQRSTUVWXYZ+/=é€😀"\\\n', min_size=0, max_size=6),
)


def mask(
    request: KubeRequest,
    body: bytes,
    chunks: list[int] | None = None,
    content_type: str | None = JSON,
    **kwargs: Any,
) -> bytes:
    """Mask C{body} fed in pieces cut at C{chunks} (offsets)."""
    masker = SecretMasker(request, content_type, **kwargs)
    cuts = sorted({c % (len(body) + 1) for c in chunks or []})
    out = []
    start = 0
    for cut in [*cuts, len(body)]:
        out.append(masker.feed(body[start:cut]))
        start = cut
    out.append(masker.close())
    return b"".join(out)


def secret(
    name: str, data: dict[str, str], string_data: dict[str, str], kind: bool = True
) -> dict[str, Any]:
    """A Secret as the API server sends it (C{kind}: with its type meta)."""
    applied = {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": name},
        "stringData": {k: v for k, v in string_data.items()},
        "data": {k: b64(v) for k, v in data.items()},
    }
    found: dict[str, Any] = {
        "metadata": {
            "name": name,
            "namespace": "shop",
            "annotations": {LAST_APPLIED: json.dumps(applied), "team": "x"},
        },
        "data": {k: b64(v) for k, v in data.items()},
        "type": "Opaque",
    }
    if string_data:
        found["stringData"] = string_data
    if kind:
        found = {"kind": "Secret", "apiVersion": "v1", **found}
    return found


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def escape_all(value: Any) -> str:
    """JSON with every character of every string as a \\u escape."""
    if isinstance(value, str):
        units = value.encode("utf-16-be")
        return (
            '"'
            + "".join(
                f"\\u{units[i]:02x}{units[i + 1]:02x}" for i in range(0, len(units), 2)
            )
            + '"'
        )
    if isinstance(value, dict):
        return (
            "{"
            + ",".join(f"{escape_all(k)}:{escape_all(v)}" for k, v in value.items())
            + "}"
        )
    if isinstance(value, list):
        return "[" + ",".join(escape_all(v) for v in value) + "]"
    return json.dumps(value)


ENCODINGS: dict[str, Callable[[Any], str]] = {
    "go": lambda v: json.dumps(v, ensure_ascii=False, separators=(",", ":")),
    "ascii": lambda v: json.dumps(v, separators=(",", ":")),
    "escaped": escape_all,
}


def strings(value: Any) -> Iterator[str]:
    """Every string in a decoded document, and in JSON held in its strings."""
    if isinstance(value, str):
        yield value
        try:
            inner = json.loads(value)
        except ValueError:
            return
        if not isinstance(inner, str):
            yield from strings(inner)
    elif isinstance(value, dict):
        for k, v in value.items():
            yield k
            yield from strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from strings(v)


def documents(body: bytes) -> Iterator[Any]:
    """The documents of a body: one, or one per line (watch)."""
    try:
        yield json.loads(body)
        return
    except ValueError:
        pass
    for line in body.splitlines():
        if line.strip():
            yield json.loads(line)


class _Leaks(SynchronousTestCase):
    def assertNoLeak(self, body: bytes, values: list[str]) -> None:
        """No value in any spelling: raw, base64, JSON escapes, decoded."""
        for value in values:
            spellings = {
                value.encode(),
                b64(value).encode(),
                json.dumps(value).encode(),
                json.dumps(value, ensure_ascii=False).encode(),
                escape_all(value).encode(),
                escape_all(value).upper().encode(),
            }
            for spelling in spellings:
                self.assertNotIn(spelling.strip(b'"'), body, value)
        for document in documents(body):
            for text in strings(document):
                for value in values:
                    self.assertNotIn(value, text)
                try:
                    decoded = base64.b64decode(text, validate=True)
                except (binascii.Error, ValueError):
                    continue
                for value in values:
                    self.assertNotIn(value.encode(), decoded)


secret_maps = st.dictionaries(names, secret_values, min_size=1, max_size=3)


class SecretTests(_Leaks):
    """Secret values never reach the output, whatever the container."""

    @settings(max_examples=60, deadline=None)
    @given(
        secret_maps,
        st.dictionaries(names, secret_values, max_size=2),
        st.sampled_from(sorted(ENCODINGS)),
        st.lists(st.integers(0, 10_000), max_size=6),
    )
    def test_single_and_lists(
        self,
        data: dict[str, str],
        string_data: dict[str, str],
        encoding: str,
        chunks: list[int],
    ) -> None:
        values = [*data.values(), *string_data.values()]
        encode = ENCODINGS[encoding]
        one = secret("db", data, string_data)
        bare = secret("db", data, string_data, kind=False)
        configmap = {"kind": "ConfigMap", "apiVersion": "v1", "data": {"a": "b"}}
        cases = [
            (GET_SECRET, one),
            (LIST_SECRETS, {"kind": "SecretList", "apiVersion": "v1", "items": [bare]}),
            # A SecretList is found by kind on any request.
            (LIST_WIDGETS, {"kind": "SecretList", "items": [bare, bare]}),
            (LIST_WIDGETS, {"kind": "List", "items": [configmap, one, configmap]}),
            (
                LIST_SECRETS,
                {
                    "kind": "Table",
                    "apiVersion": "meta.k8s.io/v1",
                    "rows": [{"cells": ["db", "Opaque", 1], "object": bare}],
                },
            ),
            (
                LIST_WIDGETS,
                {"kind": "Table", "rows": [{"cells": ["db"], "object": one}]},
            ),
            (
                LIST_SECRETS,
                {
                    "kind": "Table",
                    "rows": [
                        {
                            "cells": ["db"],
                            "object": {
                                "kind": "PartialObjectMetadata",
                                "metadata": bare["metadata"],
                            },
                        }
                    ],
                },
            ),
        ]
        for request, document in cases:
            body = encode(document).encode()
            out = mask(request, body, chunks)
            self.assertEqual(out, mask(request, body), "chunking changes the output")
            self.assertNoLeak(out, values)
            self.assertIn(DATA_PLACEHOLDER.encode(), out)

    @settings(max_examples=60, deadline=None)
    @given(
        secret_maps,
        st.sampled_from(sorted(ENCODINGS)),
        st.lists(st.integers(0, 10_000), max_size=8),
    )
    def test_watch_events(
        self, data: dict[str, str], encoding: str, chunks: list[int]
    ) -> None:
        encode = ENCODINGS[encoding]
        configmap = {"kind": "ConfigMap", "data": {"a": MARK.lower()}}
        for request, obj in [
            (WATCH_SECRETS, secret("db", data, data, kind=False)),
            (WATCH_WIDGETS, secret("db", data, {})),
        ]:
            events = [
                {"type": "ADDED", "object": obj},
                {"type": "MODIFIED", "object": configmap},
                {"type": "DELETED", "object": obj},
                {"type": "BOOKMARK", "object": {"metadata": {"resourceVersion": "9"}}},
            ]
            body = b"".join(encode(e).encode() + b"\n" for e in events)
            out = mask(request, body, chunks)
            self.assertEqual(out, mask(request, body))
            self.assertNoLeak(out, list(data.values()))
            decoded = list(documents(out))
            self.assertEqual([e["type"] for e in decoded], [e["type"] for e in events])
            if request is WATCH_WIDGETS:
                # Found by kind: other objects pass as they were.
                self.assertEqual(decoded[1]["object"], configmap)
            self.assertEqual(out.count(b"\n"), 4)

    def test_masked_form(self) -> None:
        """Keys kept, values replaced; the rest of the object as it was."""
        body = json.dumps(secret("db", {"password": "hunter2"}, {"user": "root"}))
        masker = SecretMasker(GET_SECRET, JSON)
        out = json.loads(masker.feed(body.encode()) + masker.close())
        self.assertEqual(out["data"], {"password": DATA_PLACEHOLDER})
        self.assertEqual(out["stringData"], {"user": PLACEHOLDER})
        self.assertEqual(base64.b64decode(DATA_PLACEHOLDER), b"********")
        self.assertEqual(out["metadata"]["annotations"]["team"], "x")
        applied = json.loads(out["metadata"]["annotations"][LAST_APPLIED])
        self.assertEqual(applied["data"], {"password": DATA_PLACEHOLDER})
        self.assertEqual(applied["stringData"], {"user": PLACEHOLDER})
        self.assertEqual(out["type"], "Opaque")
        self.assertEqual(masker.masked, 3)

    def test_numbers_and_escapes_kept(self) -> None:
        """A re-serialised document keeps number spellings and key order."""
        body = (
            b'{"kind":"Secret","z":1.50,"a":1e3,"n":null,"t":true,'
            b'"s":"<&>","data":{"k":"eA=="}}'
        )
        self.assertEqual(
            mask(GET_CONFIGMAP, body),
            b'{"kind":"Secret","z":1.50,"a":1e3,"n":null,"t":true,'
            b'"s":"\\u003c\\u0026\\u003e","data":{"k":"'
            + DATA_PLACEHOLDER.encode()
            + b'"}}',
        )

    def test_needs_masking(self) -> None:
        for request in (GET_SECRET, LIST_SECRETS, WATCH_SECRETS):
            self.assertTrue(needs_secret_masking(request))
        for request in (LIST_WIDGETS, GET_CONFIGMAP, classify("GET", b"/version")):
            self.assertFalse(needs_secret_masking(request))


documents_plain = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(st.characters(blacklist_categories=("Cs",)), max_size=8),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(names, inner, max_size=3)
    ),
    max_leaves=12,
)


def reference(value: Any) -> Any:
    """What masking every object of a document as a Secret gives, decoded."""
    if isinstance(value, list):
        return [reference(v) for v in value]
    if not isinstance(value, dict):
        return value
    found = {k: reference(v) for k, v in value.items()}
    for key, placeholder in (("data", DATA_PLACEHOLDER), ("stringData", PLACEHOLDER)):
        if isinstance(found.get(key), dict):
            found[key] = {
                k: placeholder if v is not None else None for k, v in found[key].items()
            }
    if isinstance(found.get(LAST_APPLIED), str):
        found[LAST_APPLIED] = json.dumps(reference(json.loads(found[LAST_APPLIED])))
    return found


def normalised(value: Any) -> Any:
    """A decoded document with last-applied annotations decoded too."""
    if isinstance(value, list):
        return [normalised(v) for v in value]
    if isinstance(value, dict):
        return {
            k: json.loads(v) if k == LAST_APPLIED else normalised(v)
            for k, v in value.items()
        }
    return value


class StreamedListTests(_Leaks):
    """
    Lists and Tables of Secrets are masked item by item: the limit is per
    item, not per list, and the result is what masking the whole gives.
    """

    @settings(max_examples=60, deadline=None)
    @given(
        st.lists(secret_maps, min_size=0, max_size=4),
        st.sampled_from([None, 1]),
        st.lists(st.integers(0, 10_000), max_size=8),
    )
    def test_same_as_whole(
        self, items: list[dict[str, str]], indent: int | None, chunks: list[int]
    ) -> None:
        values = [v for data in items for v in data.values()]
        listed = [
            secret(f"s{n}", data, data, kind=False) for n, data in enumerate(items)
        ]
        for document in (
            {"kind": "SecretList", "metadata": {"rv": "1"}, "items": listed},
            {
                "kind": "Table",
                "columnDefinitions": [{"name": "Name"}],
                "rows": [{"cells": [1, 2.5, None], "object": s} for s in listed],
                "metadata": {},
            },
            secret("one", items[0] if items else {}, {}),
        ):
            body = json.dumps(document, indent=indent).encode()
            out = mask(LIST_SECRETS, body, chunks)
            self.assertEqual(out, mask(LIST_SECRETS, body))
            self.assertNoLeak(out, values)
            expected = normalised(reference(document))
            self.assertEqual(normalised(json.loads(out)), expected)

    def test_limit_per_item(self) -> None:
        """A list far over the limit passes when each item is under it."""
        items = [
            secret(f"s{n}", {"k": f"{MARK}-{n}-" + "v" * 1000}, {}, kind=False)
            for n in range(300)
        ]
        body = json.dumps({"kind": "SecretList", "items": items}).encode()
        self.assertGreater(len(body), 300 * 1000)
        masker = SecretMasker(LIST_SECRETS, JSON, limit=4096)
        out = b"".join(
            masker.feed(body[i : i + 1000]) for i in range(0, len(body), 1000)
        )
        out += masker.close()
        self.assertNoLeak(out, [item["data"]["k"] for item in items])
        self.assertEqual(len(json.loads(out)["items"]), 300)
        # One item over the limit is refused.
        items.append(secret("big", {"k": "v" * 5000}, {}, kind=False))
        body = json.dumps({"kind": "SecretList", "items": items}).encode()
        self.assertRaises(MaskingRefused, mask, LIST_SECRETS, body, limit=4096)

    def test_malformed_secret_withheld(self) -> None:
        """data or stringData that is not a map is replaced whole."""
        body = b'{"data":["Zq9a", {"k": "Zq9b"}],"stringData":"Zq9c","x":["Zq9d"]}'
        out = mask(LIST_SECRETS, body)
        self.assertEqual(
            json.loads(out),
            {"data": DATA_PLACEHOLDER, "stringData": PLACEHOLDER, "x": ["Zq9d"]},
        )

    def test_malformed(self) -> None:
        for body in (
            b'{"a":1,}',
            b'{"a" 1}',
            b'{,"a":1}',
            b'{"a":[1,]}',
            b'{"a":[,1]}',
            b'{"a":[1 2]}',
            b'{"a":1}}',
            b'{"a":1} x',
            b'{"a":1 2}',
            b'{"items":[{"a":1}',
            b'{"a":tru',
            b'{"a":xyz}',
            b'{"a":"x\ty',
            b'{"items":[],"items":[]}',
            b'{"items":[],"\u0069tems":[]}',
            b'{"a":"\\x"}',
            b'{"a":"\\u12"}',
            b"{'a':1}",
            b'{"a":""}',
        ):
            self.assertRaises(MaskingRefused, mask, LIST_SECRETS, body)


class RequestBodyTests(_Leaks):
    """Bodies sent to the API server, for the recording."""

    @settings(max_examples=40, deadline=None)
    @given(secret_maps, st.lists(st.integers(0, 10_000), max_size=4))
    def test_writes(self, data: dict[str, str], chunks: list[int]) -> None:
        values = list(data.values())
        create = classify("POST", b"/api/v1/namespaces/shop/secrets")
        patch = classify("PATCH", b"/api/v1/namespaces/shop/secrets/db")
        encoded = {k: b64(v) for k, v in data.items()}
        cases = [
            (create, JSON, secret("db", data, data)),
            (patch, "application/merge-patch+json", {"data": encoded}),
            (patch, "application/strategic-merge-patch+json", {"stringData": data}),
            (patch, "application/apply-patch+yaml", secret("db", data, {})),
            (
                patch,
                "application/json-patch+json",
                [
                    {"op": "add", "path": "/data", "value": encoded},
                    *(
                        {"op": "replace", "path": f"/data/{k}", "value": v}
                        for k, v in encoded.items()
                    ),
                    {"op": "add", "path": "/stringData/x", "value": values[0]},
                    {
                        "op": "add",
                        "path": "/metadata",
                        "value": {
                            "annotations": {
                                LAST_APPLIED: json.dumps({"stringData": data})
                            }
                        },
                    },
                    {"op": "test", "path": "/type", "value": values[0]},
                    {"op": "remove", "path": "/data/a"},
                ],
            ),
        ]
        for request, content_type, document in cases:
            body = json.dumps(document).encode()
            out = mask(request, body, chunks, content_type=content_type)
            self.assertNoLeak(out, values)
            self.assertEqual(type(json.loads(out)), type(document))

    def test_yaml_apply(self) -> None:
        """Server-side apply in YAML proper cannot be read: refused."""
        patch = classify("PATCH", b"/api/v1/namespaces/shop/secrets/db")
        self.assertRaises(
            MaskingRefused,
            mask,
            patch,
            b"kind: Secret\nstringData:\n  password: hunter2\n",
            content_type="application/apply-patch+yaml",
        )


class UnchangedTests(SynchronousTestCase):
    """Bodies without a Secret go out byte for byte."""

    @settings(max_examples=100, deadline=None)
    @given(
        st.dictionaries(names, documents_plain, max_size=4),
        st.sampled_from([None, 2]),
        st.lists(st.integers(0, 10_000), max_size=5),
    )
    def test_byte_for_byte(
        self, document: dict[str, Any], indent: int | None, chunks: list[int]
    ) -> None:
        document = {"kind": "ConfigMap", **document}
        body = json.dumps(document, indent=indent, ensure_ascii=False).encode()
        for request in (GET_CONFIGMAP, LIST_WIDGETS):
            self.assertEqual(mask(request, body, chunks), body)
        stream = b"".join(
            json.dumps({"type": "ADDED", "object": document}).encode() + b"\n"
            for _ in range(3)
        )
        self.assertEqual(mask(WATCH_WIDGETS, stream, chunks), stream)

    def test_near_misses(self) -> None:
        """Words like imagePullSecrets are not Secrets."""
        body = (
            b'{"kind":"Pod","spec":{"imagePullSecrets":[{"name":"r"}],'
            b'"volumes":[{"secret":{"secretName":"s"}}]},"data":{"a":"b"}}'
        )
        self.assertEqual(mask(LIST_WIDGETS, body), body)

    def test_empty(self) -> None:
        self.assertEqual(mask(GET_SECRET, b"", content_type=None), b"")
        self.assertEqual(mask(WATCH_SECRETS, b""), b"")


class RefusalTests(SynchronousTestCase):
    """What cannot be masked safely raises MaskingRefused (fail closed)."""

    def refused(self, request: KubeRequest, body: bytes, **kwargs: Any) -> None:
        self.assertRaises(MaskingRefused, mask, request, body, **kwargs)

    def test_content_types(self) -> None:
        body = json.dumps(secret("db", {"k": "v"}, {})).encode()
        for content_type in (
            None,
            "",
            "application/vnd.kubernetes.protobuf",
            "application/vnd.kubernetes.protobuf;stream=watch",
            "application/yaml",
            "text/plain",
            "application/json;charset=utf-16",
            "application/jsonx",
        ):
            self.refused(GET_SECRET, body, content_type=content_type)
            self.assertFalse(is_json_media(content_type))
        for content_type in (
            "application/json",
            "Application/JSON; charset=UTF-8",
            "application/json;as=Table;v=v1;g=meta.k8s.io",
            "application/json;stream=watch",
        ):
            self.assertTrue(is_json_media(content_type))
            self.assertNotIn(b'"v"', mask(GET_SECRET, body, content_type=content_type))

    def test_not_json(self) -> None:
        for body in (
            b'{"kind":"Secret","data":{"k":"dg=="}',
            b'{"kind":"Secret","data":{"k":"dg=="},"data":{"k":"dg=="}}',
            b'{"kind":"Secret","data":{"k":NaN}}',
            b"[" * 100_000 + b"]" * 100_000,
            b'{"metadata":{"annotations":{"' + LAST_APPLIED.encode() + b'":"{}"},'
            b'"x":' + b"[" * 900 + b"]" * 900 + b"}}",
            b'{"data":{"k":"\xff"}}',
        ):
            self.refused(GET_SECRET, body)
        # UTF-16: Go reads no JSON there, and the value is inside.
        body = json.dumps(secret("db", {"k": "hunter2"}, {})).encode("utf-16-le")
        self.refused(LIST_WIDGETS, body)

    def test_limit(self) -> None:
        body = json.dumps(secret("db", {"k": "v" * 2000}, {})).encode()
        self.refused(GET_SECRET, body, limit=1000)
        self.refused(GET_CONFIGMAP, b'{"a":"' + b"x" * 2000 + b'"}', limit=1000)
        self.refused(WATCH_SECRETS, b'{"type":"ADDED"' + b" " * 2000, limit=1000)
        event = b'{"type":"ADDED","object":{}}\n'
        self.assertEqual(mask(WATCH_SECRETS, event * 100, limit=100), event * 100)

    def test_truncated_watch(self) -> None:
        self.refused(WATCH_SECRETS, b'{"type":"ADDED","object":{}}\n{"type":')

    def test_after_close(self) -> None:
        masker = SecretMasker(GET_SECRET, JSON)
        self.assertEqual(masker.end(), b"")
        self.assertRaises(MaskingRefused, masker.feed, b"{}")
        # The HTTP listener's body filters fail with ValueError.
        self.assertTrue(issubclass(MaskingRefused, ValueError))


class ValueDetectorTests(SynchronousTestCase):
    """The core's detectors over JSON string values."""

    def test_emails(self) -> None:
        values = Masker([MaskingRule("m", detectors=frozenset({"email"}))])
        body = (
            b'{"kind":"ConfigMap","data":{"owner":"alice@example.com",'
            b'"alice@example.com":"x"},"n":3}'
        )
        out = json.loads(mask(GET_CONFIGMAP, body, values=values))
        self.assertNotIn("alice@example.com", out["data"]["owner"])
        self.assertIn("alice@example.com", out["data"])  # keys are kept
        self.assertEqual(out["n"], 3)
        plain = b'{"kind":"ConfigMap","data":{"a":"b"}}'
        self.assertEqual(mask(GET_CONFIGMAP, plain, values=values), plain)


class FuzzTests(SynchronousTestCase):
    """Any input masks or is refused; nothing else escapes."""

    @settings(max_examples=300, deadline=None)
    @given(
        st.sampled_from([GET_SECRET, LIST_SECRETS, WATCH_SECRETS, LIST_WIDGETS]),
        st.lists(
            st.sampled_from(
                [
                    b"{",
                    b"}",
                    b"[",
                    b"]",
                    b",",
                    b":",
                    b'"',
                    b"\\",
                    b" ",
                    b"\n",
                    b'"data"',
                    b'"items"',
                    b'"kind"',
                    b'"Secret"',
                    b'"SecretList"',
                    b'"stringData"',
                    b'"k"',
                    b'"dg=="',
                    b"1",
                    b"-2.5e3",
                    b"true",
                    b"null",
                    b"\\u0053",
                    b"\xff",
                    b"\x00",
                    b"x",
                ]
            ),
            max_size=30,
        ),
        st.lists(st.integers(0, 200), max_size=5),
    )
    def test_mask_or_refuse(
        self, request: KubeRequest, pieces: list[bytes], chunks: list[int]
    ) -> None:
        body = b"".join(pieces)
        try:
            out = mask(request, body, chunks, limit=100)
        except MaskingRefused:
            return
        self.assertEqual(out, mask(request, body, limit=100))
