"""
Reading libpg_query's JSON parse tree: loading it (also trees deeper than
the C scanner can recurse) and the names, roles and literals in its nodes.
"""

from __future__ import annotations

import json
import re

# The C scanner behind json.loads, without the Python-level wrapper that
# strips whitespace (libpg_query's JSON has none): a third of the cost of
# loading a small statement's tree.
# (typeshed omits the scanner that JSONDecoder.__init__ sets)
_load_json = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


_ROLE_SPECS = {
    "ROLESPEC_CURRENT_USER": "CURRENT_USER",
    "ROLESPEC_SESSION_USER": "SESSION_USER",
    "ROLESPEC_CURRENT_ROLE": "CURRENT_ROLE",
    "ROLESPEC_PUBLIC": "PUBLIC",
}


def _dotted(items: object) -> str | None:
    """Join a list of C{String} nodes as C{a.b.c}."""
    if not isinstance(items, list):
        return None
    parts = []
    for item in items:
        if not isinstance(item, dict):
            return None
        string = item.get("String")
        if not isinstance(string, dict):
            return None
        parts.append(string.get("sval", ""))
    return ".".join(parts) if parts else None


def _object_name(node: object) -> str | None:
    """The name in one entry of DropStmt/GrantStmt C{objects}."""
    if not isinstance(node, dict):
        return None
    for key, value in node.items():
        if not isinstance(value, dict):
            return None
        if key == "String":
            return value.get("sval")
        if key == "List":
            return _dotted(value.get("items"))
        if key == "ObjectWithArgs":
            return _dotted(value.get("objname"))
        if key == "TypeName":
            return _dotted(value.get("names"))
    return None


def _rangevar_name(rv: dict) -> str:
    name = rv.get("relname", "")
    schema = rv.get("schemaname")
    if schema:
        name = f"{schema}.{name}"
        catalog = rv.get("catalogname")
        if catalog:
            name = f"{catalog}.{name}"
    return name


def _role_name(spec: object) -> str | None:
    if not isinstance(spec, dict):
        return None
    roletype = spec.get("roletype")
    if roletype == "ROLESPEC_CSTRING":
        return spec.get("rolename")
    return _ROLE_SPECS.get(roletype) if isinstance(roletype, str) else None


def _literal(node: object) -> str | None:
    """The text of a string (or number, or boolean) constant, possibly cast."""
    if not isinstance(node, dict):
        return None
    cast = node.get("TypeCast")
    if isinstance(cast, dict):
        node = cast.get("arg")
        if not isinstance(node, dict):
            return None
    const = node.get("A_Const")
    if not isinstance(const, dict):
        return None
    if "sval" in const:
        return const["sval"].get("sval", "")
    if "ival" in const:
        return str(const["ival"].get("ival", 0))
    if "fval" in const:
        return const["fval"].get("fval", "0")
    if "boolval" in const:
        return "on" if const["boolval"].get("boolval") else "off"
    return None


def qualified_name(text: str) -> tuple[str, ...] | None:
    """
    A name as PostgreSQL reads a C{regclass} text (C{'public."My T"'}):
    dot-separated identifiers, double quotes keeping case and dots,
    unquoted parts lower-cased; None if it is not one.
    """
    parts: list[str] = []
    i, n = 0, len(text)
    while True:
        while i < n and text[i].isspace():
            i += 1
        if i < n and text[i] == '"':
            i += 1
            part = []
            while True:
                if i >= n:
                    return None
                if text[i] == '"':
                    if i + 1 < n and text[i + 1] == '"':
                        part.append('"')
                        i += 2
                        continue
                    i += 1
                    break
                part.append(text[i])
                i += 1
            name = "".join(part)
        else:
            start = i
            while i < n and text[i] != "." and not text[i].isspace():
                if text[i] == '"':
                    return None
                i += 1
            name = text[start:i]
            name = "".join(c.lower() if c.isascii() else c for c in name)
        if not name:
            return None
        parts.append(name)
        while i < n and text[i].isspace():
            i += 1
        if i == n:
            return tuple(parts)
        if text[i] != ".":
            return None
        i += 1


def _load_tree(text: str) -> dict:
    """
    libpg_query's JSON as Python values: the C scanner when the tree is
    shallow enough for it, else an iterative decoder (PostgreSQL accepts
    expressions thousands of levels deep).
    """
    try:
        return _load_json(text, 0)[0]
    except RecursionError:
        return _load_deep(text)


_TOKEN = re.compile(r'\s*(?:([{}\[\],:])|(")|(-?\d[\d.eE+-]*)|(true|false|null))')
# json.decoder's C string scanner (typeshed declares it in _json only)
_scan_string = json.decoder.scanstring  # type: ignore[attr-defined]


def _load_deep(text: str) -> dict:
    """Decode JSON without recursion (an explicit stack of containers)."""
    stack: list = []
    keys: list = []
    root: object = None
    pos = 0
    end = len(text)
    pending_key: object = None
    while pos < end:
        match = _TOKEN.match(text, pos)
        if match is None:
            if text[pos:].strip() == "":
                break
            raise ValueError(f"bad JSON at {pos}")
        pos = match.end()
        punct, quote, number, word = match.groups()
        if punct in ("{", "["):
            container: object = {} if punct == "{" else []
            _put(stack, keys, container)
            if not stack and root is None:
                root = container
            stack.append(container)
            keys.append(None)
            continue
        if punct in ("}", "]"):
            stack.pop()
            keys.pop()
            continue
        if punct == "," or punct == ":":
            continue
        if quote:
            value, pos = _scan_string(text, pos)
            top = stack[-1] if stack else None
            if isinstance(top, dict) and keys[-1] is None:
                keys[-1] = value
                continue
            _put(stack, keys, value)
            continue
        if number:
            value = float(number) if any(c in number for c in ".eE") else int(number)
            _put(stack, keys, value)
            continue
        _put(stack, keys, {"true": True, "false": False, "null": None}[word])
    del pending_key
    if not isinstance(root, dict):
        raise ValueError("JSON is not an object")
    return root


def _put(stack: list, keys: list, value: object) -> None:
    if not stack:
        return
    top = stack[-1]
    if isinstance(top, dict):
        top[keys[-1]] = value
        keys[-1] = None
    else:
        top.append(value)
