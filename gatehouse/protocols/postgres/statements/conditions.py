"""
Constant-true (and constant-false) conditions: whether a WHERE or ON
clause bounds the rows a DELETE or UPDATE touches, as far as a parser can
tell.
"""

from __future__ import annotations

from typing import TypeGuard

from gatehouse.protocols.postgres.statements.nodes import _dotted

# -- constant-true conditions ------------------------------------------------

_UNKNOWN = object()
_NULL = None
#: how deep a condition is evaluated; deeper is "not known to be true"
_MAX_CONDITION_DEPTH = 64
_TRUE_TEXT = frozenset({"t", "true", "y", "yes", "on", "1"})
_FALSE_TEXT = frozenset({"f", "false", "n", "no", "off", "0"})


def always_true(node: object) -> bool:
    """
    Whether a WHERE (or ON) condition is true for every row, as far as a
    parser can tell: constants (C{true}, C{1=1}, C{'a'='a'}, C{NOT false},
    C{2>1}, C{1+1=2}), a column compared with itself (C{x = x}), C{p OR
    NOT p}, C{x IS NULL OR x IS NOT NULL}, anything C{OR true}, C{EXISTS
    (SELECT 1)}, C{LIKE '%'}.  Best effort: False means "not known".
    """
    try:
        return _value(node, 0) is True
    except (ArithmeticError, ValueError, TypeError, OverflowError):
        return False


def _reads_values(where: object) -> bool:
    """
    Whether a condition's constant-truth may depend on the values of its
    constants or parameters (a fact of its shape: texts of one shape
    agree).  Plain filters, C{col = 5 AND col2 IN (1, $1)}, do not.
    """
    stack = [where]
    found = False
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "A_Const" in node or "ParamRef" in node:
                found = True
                break
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return found and not _plain_filter(where)


def _target_names(body: dict) -> frozenset[str]:
    """The names that qualify a DELETE/UPDATE/MERGE target's columns."""
    relation = body.get("relation")
    if not isinstance(relation, dict):
        return frozenset()
    names = {relation.get("relname")}
    alias = relation.get("alias")
    if isinstance(alias, dict):
        names.add(alias.get("aliasname"))
    return frozenset(n for n in names if isinstance(n, str))


def _reads_no_row(where: object, target: frozenset[str] = frozenset()) -> bool:
    """
    Whether a condition reads no column of the target row (nor C{CURRENT
    OF}): then it has one value for every target row.  A column qualified
    by another relation (C{u.k}) is not the target's when C{target} names
    the target; an unqualified one may be.
    """
    stack = [where]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            if "CurrentOfExpr" in node:
                return False
            column = node.get("ColumnRef")
            if isinstance(column, dict):
                fields = column.get("fields")
                if not target or not isinstance(fields, list) or len(fields) < 2:
                    return False
                qualifier = _dotted(fields[-2:-1])
                if qualifier is None or qualifier in target:
                    return False
                continue
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    return True


def _is_column(node: object) -> bool:
    return isinstance(node, dict) and "ColumnRef" in node


def _is_value(node: object) -> bool:
    if isinstance(node, dict) and "TypeCast" in node:
        node = node["TypeCast"].get("arg")
    return isinstance(node, dict) and ("A_Const" in node or "ParamRef" in node)


def _items(node: object) -> list:
    """The items of an IN list (a bare list or a List node)."""
    if isinstance(node, dict) and isinstance(node.get("List"), dict):
        node = node["List"].get("items")
    return node if isinstance(node, list) else []


def _plain_filter(where: object) -> bool:
    """C{col <op> value} comparisons and C{col IN (values)}, ANDed."""
    stack = [where]
    while stack:
        node = stack.pop()
        if not isinstance(node, dict) or len(node) != 1:
            return False
        ((kind, body),) = node.items()
        if not isinstance(body, dict):
            return False
        if kind == "BoolExpr" and body.get("boolop") == "AND_EXPR":
            stack.extend(body.get("args") or ())
            continue
        if kind != "A_Expr":
            return False
        left, right = body.get("lexpr"), body.get("rexpr")
        if body.get("kind") == "AEXPR_OP" and _dotted(body.get("name")) in _COMPARE:
            if (_is_column(left) and _is_value(right)) or (
                _is_column(right) and _is_value(left)
            ):
                continue
        if body.get("kind") == "AEXPR_IN" and _is_column(left):
            items = _items(right)
            if items and all(map(_is_value, items)):
                continue
        return False
    return True


def _strip(node: object, depth: int = 0) -> object:
    """A subtree without its locations, for comparing operands."""
    if depth > _MAX_CONDITION_DEPTH:
        raise ValueError("too deep")
    if isinstance(node, dict):
        if len(node) == 1:
            ((kind, body),) = node.items()
            if kind == "CollateClause" and isinstance(body, dict):
                # a collation changes no equality with itself
                return _strip(body.get("arg"), depth + 1)
        return {k: _strip(v, depth + 1) for k, v in node.items() if k != "location"}
    if isinstance(node, list):
        return [_strip(v, depth + 1) for v in node]
    return node


def _column_fields(node: object) -> list | None:
    if isinstance(node, dict) and isinstance(node.get("CollateClause"), dict):
        node = node["CollateClause"].get("arg")
    body = node.get("ColumnRef") if isinstance(node, dict) else None
    fields = body.get("fields") if isinstance(body, dict) else None
    return fields if isinstance(fields, list) and fields else None


def _same(a: object, b: object) -> bool:
    if a is None:
        return False
    left, right = _column_fields(a), _column_fields(b)
    if left is not None and right is not None and min(len(left), len(right)) == 1:
        # t.c and c name one column wherever both resolve (else PostgreSQL
        # refuses c as ambiguous); t.c and u.c are two columns
        return _strip(left[-1]) == _strip(right[-1])
    return _strip(a) == _strip(b)


def _const(const: dict) -> object:
    if const.get("isnull"):
        return _NULL
    if "boolval" in const:
        return bool(const["boolval"].get("boolval", False))
    if "ival" in const:
        return int(const["ival"].get("ival", 0))
    if "fval" in const:
        return float(const["fval"].get("fval", "0"))
    if "sval" in const:
        return str(const["sval"].get("sval", ""))
    if "bsval" in const:
        return ("bits", const["bsval"].get("bsval", ""))
    return _UNKNOWN


def _as_bool(value: object) -> object:
    if value is _NULL or isinstance(value, bool):
        return value
    if isinstance(value, int):
        return value != 0
    if isinstance(value, str):
        text = value.strip().lower()
        if text in _TRUE_TEXT:
            return True
        if text in _FALSE_TEXT:
            return False
    return _UNKNOWN


_COMPARE = {
    "=": lambda a, b: a == b,
    "<>": lambda a, b: a != b,
    "!=": lambda a, b: a != b,
    "<": lambda a, b: a < b,
    ">": lambda a, b: a > b,
    "<=": lambda a, b: a <= b,
    ">=": lambda a, b: a >= b,
}
_ARITHMETIC = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
}
_REFLEXIVE = frozenset({"=", "<=", ">="})


def _comparable(a: object, b: object) -> bool:
    numbers = (int, float)
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool)
    if isinstance(a, numbers) and isinstance(b, numbers):
        return True
    return type(a) is type(b) and not isinstance(a, numbers)


def _value(node: object, depth: int) -> object:
    """The constant value of an expression: a Python value, None (NULL), or _UNKNOWN."""
    if depth > _MAX_CONDITION_DEPTH or not isinstance(node, dict) or len(node) != 1:
        return _UNKNOWN
    ((kind, body),) = node.items()
    if not isinstance(body, dict):
        return _UNKNOWN
    depth += 1
    if kind == "A_Const":
        return _const(body)
    if kind == "TypeCast":
        value = _value(body.get("arg"), depth)
        type_name = _dotted((body.get("typeName") or {}).get("names")) or ""
        last = type_name.rsplit(".", 1)[-1]
        if last in ("bool", "boolean"):
            return _as_bool(value)
        if last in ("int", "int2", "int4", "int8", "integer", "smallint", "bigint"):
            if isinstance(value, bool) or value is _UNKNOWN:
                return _UNKNOWN
            if value is _NULL:
                return _NULL
            if isinstance(value, (int, float, str)):
                return int(value)
            raise TypeError(f"{value!r} is not read as an integer")  # bits
        if last in ("text", "varchar", "name"):
            if value is _NULL or isinstance(value, str):
                return value
            if isinstance(value, bool):
                return "true" if value else "false"
            if isinstance(value, int):
                return str(value)
        return _UNKNOWN
    if kind == "CollateClause":
        return _value(body.get("arg"), depth)
    if kind == "CoalesceExpr":
        # the first argument that is not NULL
        for arg in body.get("args") or ():
            value = _value(arg, depth)
            if value is not _NULL:
                return value
        return _NULL
    if kind == "CaseExpr":
        return _case(body, depth)
    if kind == "BoolExpr":
        return _bool_expr(body, depth)
    if kind == "A_Expr":
        return _a_expr(body, depth)
    if kind == "NullTest":
        arg = _value(body.get("arg"), depth)
        if arg is _UNKNOWN:
            return _UNKNOWN
        is_null = arg is _NULL
        return is_null if body.get("nulltesttype") == "IS_NULL" else not is_null
    if kind == "BooleanTest":
        arg = _as_bool(_value(body.get("arg"), depth))
        if arg is _UNKNOWN:
            return _UNKNOWN
        test = body.get("booltesttype", "")
        return {
            "IS_TRUE": arg is True,
            "IS_NOT_TRUE": arg is not True,
            "IS_FALSE": arg is False,
            "IS_NOT_FALSE": arg is not False,
            "IS_UNKNOWN": arg is _NULL,
            "IS_NOT_UNKNOWN": arg is not _NULL,
        }.get(test, _UNKNOWN)
    if kind == "SubLink" and body.get("subLinkType") == "EXPR_SUBLINK":
        # (SELECT <constant>): one row, no table
        select = body.get("subselect")
        select = select.get("SelectStmt") if isinstance(select, dict) else None
        targets = select.get("targetList") if isinstance(select, dict) else None
        if (
            isinstance(select, dict)
            and isinstance(targets, list)
            and len(targets) == 1
            and set(select) <= {"targetList", "limitOption", "op"}
            and select.get("op", "SETOP_NONE") == "SETOP_NONE"
        ):
            target = (
                targets[0].get("ResTarget") if isinstance(targets[0], dict) else None
            )
            if isinstance(target, dict):
                return _value(target.get("val"), depth)
        return _UNKNOWN
    if kind == "SubLink" and body.get("subLinkType") == "EXISTS_SUBLINK":
        select = body.get("subselect")
        select = select.get("SelectStmt") if isinstance(select, dict) else None
        if (
            isinstance(select, dict)
            and set(select) <= {"valuesLists", "limitOption", "op"}
            and select.get("valuesLists")
        ):
            return True  # VALUES has at least one row
        if (
            isinstance(select, dict)
            and "fromClause" not in select
            and "limitCount" not in select
            and "havingClause" not in select
            and select.get("op", "SETOP_NONE") == "SETOP_NONE"
            and "valuesLists" not in select
        ):
            where = select.get("whereClause")
            if where is None or _value(where, depth) is True:
                return True
            if _as_bool(_value(where, depth)) in (False, _NULL):
                return False  # no row
        return _UNKNOWN
    return _UNKNOWN


def _bool_expr(body: dict, depth: int) -> object:
    op = body.get("boolop")
    args = body.get("args") or []
    values = [_as_bool(_value(a, depth)) for a in args]
    if op == "NOT_EXPR":
        value = values[0] if values else _UNKNOWN
        if value is _UNKNOWN or value is _NULL:
            return value
        return not value
    # three-valued logic; _UNKNOWN (not known here) wins over NULL
    if op == "AND_EXPR":
        if any(v is False for v in values):
            return False
        if any(v is _UNKNOWN for v in values):
            return _UNKNOWN
        return _NULL if any(v is _NULL for v in values) else True
    if op == "OR_EXPR":
        if any(v is True for v in values):
            return True
        if any(v is _UNKNOWN for v in values):
            # p OR NOT p over what only the rows decide
            return True if _tautology(args) else _UNKNOWN
        return _NULL if any(v is _NULL for v in values) else False
    return _UNKNOWN


def _case(body: dict, depth: int) -> object:
    """A CASE whose branches decide on constants."""
    subject = body.get("arg")
    subject_value = _value(subject, depth) if subject is not None else None
    if subject is not None and subject_value is _UNKNOWN:
        return _UNKNOWN
    for arm in body.get("args") or ():
        when = arm.get("CaseWhen") if isinstance(arm, dict) else None
        if not isinstance(when, dict):
            return _UNKNOWN
        test = _value(when.get("expr"), depth)
        if subject is not None:
            if test is _UNKNOWN:
                return _UNKNOWN
            if test is _NULL or subject_value is _NULL:
                continue
            if not _comparable(subject_value, test):
                return _UNKNOWN
            test = subject_value == test
        else:
            test = _as_bool(test)
        if test is _UNKNOWN:
            return _UNKNOWN
        if test is True:
            return _value(when.get("result"), depth)
    default = body.get("defresult")
    return _value(default, depth) if default is not None else _NULL


def _tautology(args: list) -> bool:
    """C{p OR NOT p}, C{x IS NULL OR x IS NOT NULL} among OR's arguments."""
    nots: list[object] = []
    null_tests: dict[str, list] = {"IS_NULL": [], "IS_NOT_NULL": []}
    for arg in args:
        if not isinstance(arg, dict):
            continue
        expr = arg.get("BoolExpr")
        if isinstance(expr, dict) and expr.get("boolop") == "NOT_EXPR":
            nots.extend(expr.get("args") or ())
        test = arg.get("NullTest")
        if isinstance(test, dict) and test.get("nulltesttype") in null_tests:
            null_tests[test["nulltesttype"]].append(test.get("arg"))
    for negated in nots:
        if any(_same(negated, arg) for arg in args):
            return True
    return any(
        _same(a, b) for a in null_tests["IS_NULL"] for b in null_tests["IS_NOT_NULL"]
    )


def _number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _among(node: object, items: list) -> bool:
    """Whether C{node} is one of C{items} (L{_same}); cheap for long lists."""
    if not isinstance(node, dict) or len(node) != 1:
        return False
    kind = next(iter(node))
    kinds = (kind, "CollateClause") if kind != "CollateClause" else None
    return any(
        isinstance(item, dict)
        and (kinds is None or next(iter(item), None) in kinds)
        and _same(node, item)
        for item in items
    )


def _between(kind: str, subject: object, bounds: list, depth: int) -> object:
    """
    x [NOT] BETWEEN [SYMMETRIC] a AND b, on constants or x between x and x,
    in three-valued logic: C{a <= x AND x <= b} (SYMMETRIC: either way
    round), negated for NOT, so C{2 NOT BETWEEN NULL AND 0} is true.
    """
    if len(bounds) != 2:
        return _UNKNOWN
    low, high = bounds
    negated = "NOT" in kind
    if _same(subject, low) and _same(subject, high):
        value = _value(subject, depth)
        return _NULL if value is _NULL else (not negated)
    x, a, b = (_value(v, depth) for v in (subject, low, high))
    if x is _UNKNOWN or a is _UNKNOWN or b is _UNKNOWN:
        return _UNKNOWN
    inside = _and3(_le3(a, x), _le3(x, b))
    if kind.endswith("_SYM"):
        inside = _or3(inside, _and3(_le3(b, x), _le3(x, a)))
    return _not3(inside) if negated else inside


def _le3(p: object, q: object) -> object:
    if p is _NULL or q is _NULL:
        return _NULL
    if not _comparable(p, q):
        return _UNKNOWN
    return p <= q  # type: ignore[operator]


def _and3(p: object, q: object) -> object:
    if p is False or q is False:
        return False
    if p is _UNKNOWN or q is _UNKNOWN:
        return _UNKNOWN
    if p is _NULL or q is _NULL:
        return _NULL
    return True


def _or3(p: object, q: object) -> object:
    if p is True or q is True:
        return True
    if p is _UNKNOWN or q is _UNKNOWN:
        return _UNKNOWN
    if p is _NULL or q is _NULL:
        return _NULL
    return False


def _not3(p: object) -> object:
    if p is True:
        return False
    if p is False:
        return True
    return p


def _a_expr(body: dict, depth: int) -> object:
    kind = body.get("kind")
    name = _dotted(body.get("name")) or ""
    lexpr, rexpr = body.get("lexpr"), body.get("rexpr")
    if kind in ("AEXPR_NOT_DISTINCT", "AEXPR_DISTINCT") and _same(lexpr, rexpr):
        return kind == "AEXPR_NOT_DISTINCT"
    if kind == "AEXPR_OP" and name in _REFLEXIVE and _same(lexpr, rexpr):
        # x = x holds for every row where x is not null (NULL = NULL does not)
        return _NULL if _value(lexpr, depth) is _NULL else True
    if kind in ("AEXPR_LIKE", "AEXPR_ILIKE", "AEXPR_OP") and name in ("~~", "~~*"):
        pattern = _value(rexpr, depth)
        if isinstance(pattern, str) and pattern and set(pattern) == {"%"}:
            return True
    if kind == "AEXPR_IN" and name == "=" and lexpr is not None:
        if _among(lexpr, _items(rexpr)):
            # x IN (..., x, ...): true wherever x is not null
            return _NULL if _value(lexpr, depth) is _NULL else True
    if kind == "AEXPR_OP_ANY" and name in _REFLEXIVE and lexpr is not None:
        array = rexpr.get("A_ArrayExpr") if isinstance(rexpr, dict) else None
        elements = array.get("elements") if isinstance(array, dict) else None
        if isinstance(elements, list) and _among(lexpr, elements):
            return _NULL if _value(lexpr, depth) is _NULL else True
    if kind in (
        "AEXPR_BETWEEN",
        "AEXPR_NOT_BETWEEN",
        "AEXPR_BETWEEN_SYM",
        "AEXPR_NOT_BETWEEN_SYM",
    ):
        return _between(kind, lexpr, _items(rexpr), depth)
    if kind == "AEXPR_IN":
        left = _value(lexpr, depth)
        items = _items(rexpr)
        values = [_value(i, depth) for i in items]
        if left is _UNKNOWN or any(v is _UNKNOWN for v in values):
            return _UNKNOWN
        if left is _NULL:
            return _NULL
        if any(v is not _NULL and not _comparable(left, v) for v in values):
            return _UNKNOWN
        if any(left == v for v in values if v is not _NULL):
            return name == "="
        if _NULL in values:
            return _NULL  # no match, but a NULL might have been one
        return name != "="
    if kind != "AEXPR_OP":
        return _UNKNOWN
    right = _value(rexpr, depth)
    if lexpr is None:
        if (
            name == "-"
            and isinstance(right, (int, float))
            and not isinstance(right, bool)
        ):
            return -right
        if name == "+" and isinstance(right, (int, float)):
            return right
        return _UNKNOWN
    left = _value(lexpr, depth)
    if left is _UNKNOWN or right is _UNKNOWN:
        return _UNKNOWN
    if left is _NULL or right is _NULL:
        return _NULL
    if name in _COMPARE:
        if isinstance(left, bool) or isinstance(right, bool):
            left, right = _as_bool(left), _as_bool(right)
            if left is _UNKNOWN or right is _UNKNOWN:
                return _UNKNOWN
        if not _comparable(left, right):
            return _UNKNOWN
        return _COMPARE[name](left, right)
    if name in ("/", "%") and _number(left) and _number(right):
        if isinstance(left, int) and isinstance(right, int):
            # PostgreSQL truncates toward zero; the remainder has the
            # dividend's sign
            quotient = (
                abs(left) // abs(right) * (1 if (left < 0) == (right < 0) else -1)
            )
            return quotient if name == "/" else left - right * quotient
        return left / right if name == "/" else _UNKNOWN
    if name in _ARITHMETIC:
        numbers = (int, float)
        if (
            isinstance(left, numbers)
            and isinstance(right, numbers)
            and not isinstance(left, bool)
            and not isinstance(right, bool)
        ):
            return _ARITHMETIC[name](left, right)
        return _UNKNOWN
    if name == "||" and isinstance(left, str) and isinstance(right, str):
        return left + right
    return _UNKNOWN
