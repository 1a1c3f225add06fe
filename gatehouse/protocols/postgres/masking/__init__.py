"""
Mask result values in the backend's messages before the client sees them
(sans-IO: message bodies in, rewritten bodies out).

L{ResponseMasker} follows each RowDescription (column names, table OIDs
and column numbers, types, formats) and rewrites the DataRows after it;
after a CopyOutResponse it rewrites the CopyData rows of a C{COPY ... TO
STDOUT} in text or CSV format.  Every other message that carries values
goes through it too: ErrorResponse and NoticeResponse fields,
NotificationResponse, ParameterStatus, FunctionCallResponse, and the
column names of a RowDescription (see L{ResponseMasker.rename}).  A masked
value keeps the message well-formed and, where it can, keeps the value
valid for its type:

 - text-like types (text, varchar, char, name, "char", xml, unknown, and
   types defined in the database such as citext or enums), in text or
   binary format: detected values are masked in place, a whole-column rule
   gives as many C{*} as the value has characters;
 - json and jsonb (text, or binary: a version byte then the text): as
   text, except that a card number outside a string (a bare JSON number)
   becomes its last four digits; a whole-column rule gives a JSON string
   of C{*}; under column rules, members whose key names a masked column
   become C{"***"};
 - numeric types in text format (int2/4/8, numeric, float4/8, oid, money
   and their arrays): digits become C{0} (a card keeps its last four);
 - binary int8, numeric, arrays, records and ranges: decoded, masked as
   above, encoded again; values read by their bytes rather than their
   type (bytea, types of the database, built-ins of their own format)
   become NULL if they still show a detected value; values that do not
   decode become NULL;
 - anything else that must be masked becomes NULL: a binary value of a
   non-text type under a column rule, or a value of another built-in type
   under a column rule or holding a detected value, and, under column
   rules, records and composite values without a source column.

Detectors do not look into types whose text and binary forms cannot hold
what they detect (bool, small integers, floats, dates and times, uuid,
network addresses, bit strings).

Rows whose columns are unknown -- a DataRow with no RowDescription since
the last ReadyForQuery or result, as when a prepared statement is executed
without a Describe, or with a different column count -- cannot have
column rules applied: if the session has any, all their values become
NULL; otherwise every value is scanned as text.

The modules: C{response} (L{ResponseMasker}), C{columns} (what is done with
a column, by type and format), C{binary} (binary values of built-in types),
C{copyformats} (COPY text and CSV rows) and C{errors} (error and notice
fields).
"""

from __future__ import annotations

from gatehouse.protocols.postgres.masking.binary import (
    _numeric_binary as _numeric_binary,
)
from gatehouse.protocols.postgres.masking.binary import (
    _numeric_text as _numeric_text,
)
from gatehouse.protocols.postgres.masking.response import ResponseMasker

__all__ = ["ResponseMasker"]
