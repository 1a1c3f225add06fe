"""
What masking does with a result column's values, by type OID and format:
a scan for detected values, and how a value is masked whole.
"""

from __future__ import annotations

# Column actions: scans, then whole-value masks.
(
    _KEEP,
    _SCAN_TEXT,
    _SCAN_JSON,
    _SCAN_JSONB,
    _SCAN_NUMERIC,
    _SCAN_NULL,
    _SCAN_BINARY,
    _STARS,
    _JSON_STRING,
    _JSONB_STRING,
    _ZEROS,
    _NULL,
) = range(12)
_WHOLE = _STARS

#: first OID of objects created in a database (below it: built-in)
_FIRST_NORMAL_OID = 16384
_TEXT_TYPES = frozenset({18, 19, 25, 142, 705, 1042, 1043})
_TEXT_ARRAYS = frozenset({143, 1002, 1003, 1009, 1014, 1015})
_JSON_TYPES = frozenset({114, 3802})
_JSON_ARRAYS = frozenset({199, 3807})
_NUMERIC_TYPES = frozenset(
    {20, 21, 23, 26, 700, 701, 790, 1700}
    | {1005, 1007, 1016, 1021, 1022, 1028, 1231, 791}
)
#: types whose text form cannot hold a card, an e-mail address or an IBAN
_OPAQUE_TYPES = frozenset(
    {16, 17, 650, 774, 829, 869, 1082, 1083, 1114, 1184, 1186, 1266, 1560, 1562}
    | {2950, 1000, 1001, 1115, 1182, 1185, 2951}
)
#: record and array of record: several values by position, no names
_RECORD_TYPES = frozenset({2249, 2287})
#: types whose binary form cannot hold a card, an e-mail address or an IBAN
#: in any form that their text form would show (fixed-size numbers of at
#: most 10 digits, floats, dates and times, uuid, network addresses, bits)
_BINARY_OPAQUE = frozenset(
    {16, 21, 23, 26, 27, 28, 29, 600, 601, 602, 603, 604, 628, 650, 700, 701}
    | {718, 774, 790, 829, 869, 1082, 1083, 1114, 1184, 1186, 1266, 1560, 1562}
    | {2950, 3220}
)
#: int2, int4, oid
_SHORT_INTEGERS = frozenset({21, 23, 26})
_JSONB_VERSION = b"\x01"
#: characters that give a COPY row of either format its structure
_STRUCTURE = '\t,"\\\n\r'


def _actions(type_oid: int, fmt: int) -> tuple[int, int]:
    """What to do with a column's values: C{(scan, whole)} actions."""
    if fmt == 0:
        if type_oid in _TEXT_TYPES or type_oid >= _FIRST_NORMAL_OID or not type_oid:
            return _SCAN_TEXT, _STARS
        if type_oid in _NUMERIC_TYPES:
            return _SCAN_NUMERIC, _ZEROS
        if type_oid in _JSON_TYPES:
            return _SCAN_JSON, _JSON_STRING
        if type_oid in _TEXT_ARRAYS or type_oid in _RECORD_TYPES:
            # array and record text quote only what a mask never holds
            return _SCAN_TEXT, _NULL
        if type_oid in _JSON_ARRAYS:
            return _SCAN_JSON, _NULL
        if type_oid in _OPAQUE_TYPES:
            return _KEEP, _NULL
        return _SCAN_NULL, _NULL
    if type_oid in _TEXT_TYPES:
        return _SCAN_TEXT, _STARS
    if type_oid == 114:
        return _SCAN_JSON, _JSON_STRING
    if type_oid == 3802:
        return _SCAN_JSONB, _JSONB_STRING
    if type_oid in _BINARY_OPAQUE:
        return _KEEP, _NULL
    return _SCAN_BINARY, _NULL
