"""
Built-in protections: what no policy can allow through the gateway.

A client reaches PostgreSQL as the gateway's own upstream role.  Whatever
the policy says, it must never change that role (its password, as psql's
C{\\password} sends it, its settings, its name, its existence, the roles
it is a member of), never set
settings on a role or database that change identity or how SQL is read
(so that no later session is locked out or read differently), never become
another role the target does not allow (C{settable_roles}), and never
switch the session to an encoding or string syntax the gateway refuses to
follow (C{SET client_encoding} to SJIS and its kind, C{SET
standard_conforming_strings = off}, spelled directly: such a change made
indirectly, by a function, is caught by the session's barrier instead).

L{refusal} is sans-IO: it reads the L{Sensitive} facts the classifier
found in each statement (also inside SQL text a built-in runs).
"""

from __future__ import annotations

from collections.abc import Iterable

from gatehouse.protocols.postgres.statements import Sensitive, Statement

__all__ = ["PREFIX", "READING_SETTINGS", "UNSAFE_CLIENT_ENCODINGS", "refusal"]

#: How every refusal's message starts.
PREFIX = "gatehouse: built-in protection: "

#: Role specifications that stand for the session's own role.
_SELF = frozenset({"CURRENT_USER", "SESSION_USER", "CURRENT_ROLE"})

#: Settings that change who the session is or how its SQL is read; never
#: stored on a role or database through the gateway.
READING_SETTINGS = frozenset(
    {
        "role",
        "session_authorization",
        "standard_conforming_strings",
        "client_encoding",
        "backslash_quote",
        "session_preload_libraries",
        "local_preload_libraries",
    }
)

#: Client encodings (as PostgreSQL matches names: case and punctuation
#: ignored) whose multibyte characters can end in an ASCII byte such as a
#: backslash or a quote, so that a text reads differently in them.
UNSAFE_CLIENT_ENCODINGS = frozenset(
    {
        "sjis",
        "shiftjis",
        "mskanji",
        "win932",
        "windows932",
        "shiftjis2004",
        "big5",
        "win950",
        "windows950",
        "gbk",
        "win936",
        "windows936",
        "cp936",
        "gb18030",
        "uhc",
        "win949",
        "windows949",
        "cp949",
        "johab",
    }
)


def _encoding_key(name: str) -> str:
    """An encoding name as PostgreSQL compares them (clean_encoding_name)."""
    return "".join(c.lower() for c in name if c.isalnum())


def _false(value: str) -> bool | None:
    """
    Whether PostgreSQL's parse_bool reads C{value} as false (True), as
    true (False), or not at all (None).
    """
    text = value.strip().lower()
    if not text:
        return None
    if "true".startswith(text) or "yes".startswith(text) or text == "1":
        return False
    if "false".startswith(text) or "no".startswith(text) or text == "0":
        return True
    if text in ("on",):
        return False
    if len(text) >= 2 and "off".startswith(text):
        return True
    return None


def _own(role: str | None, own_roles: frozenset[str]) -> bool:
    return role is None or role in _SELF or role in own_roles


def _check(
    found: Sensitive, own_roles: frozenset[str], settable_roles: frozenset[str]
) -> str | None:
    action = found.action
    if action == "membership":
        if _own(found.role, own_roles):
            return (
                "the gateway's own database role's memberships cannot be "
                "changed through the gateway (a granted role's privileges "
                "would be inherited without SET ROLE)"
            )
        return None
    if action in ("alter-role", "rename-role", "drop-role"):
        if _own(found.role, own_roles):
            what = {"alter-role": "altered", "rename-role": "renamed"}.get(
                action, "dropped"
            )
            return (
                f"the gateway's own database role cannot be {what} through "
                "the gateway (its password and settings are the gateway "
                "operator's)"
            )
        return None
    if action in ("role-setting", "database-setting"):
        where = "a role" if action == "role-setting" else "a database"
        if action == "role-setting" and found.role == "ALL" and not found.reset:
            return (
                "ALTER ROLE ALL SET would change the gateway's own role's "
                "settings; set it per role instead"
            )
        if action == "role-setting" and _own(found.role, own_roles):
            return "the gateway's own database role's settings cannot be changed"
        if found.setting in READING_SETTINGS and not found.reset:
            return (
                f"{found.setting} cannot be set on {where}: it changes who "
                "sessions are or how their SQL is read"
            )
        return None
    # SET / RESET / set_config
    setting = found.setting
    if setting is None:
        if found.reset:
            return None  # RESET ALL
        return (
            "set_config with a setting name that is not a literal is not "
            "allowed; name the setting in the statement"
        )
    if found.reset:
        return None
    value = found.value
    if setting in ("role", "session_authorization"):
        if value is None:
            return f"{setting} can only be set to a role named literally"
        if setting == "role" and value.lower() == "none":
            return None
        if value in settable_roles or value in own_roles:
            return None
        what = "SET ROLE" if setting == "role" else "SET SESSION AUTHORIZATION"
        return (
            f"{what} to {value!r} is not allowed on this target "
            "(its settable_roles option lists the roles a session may become)"
        )
    if setting == "client_encoding":
        if value is None:
            return "client_encoding can only be set to an encoding named literally"
        if _encoding_key(value) in UNSAFE_CLIENT_ENCODINGS:
            return (
                f"client encoding {value!r} is not supported through the "
                "gateway: its characters can hide quotes and backslashes; "
                "use UTF8"
            )
        return None
    if setting == "standard_conforming_strings":
        if value is None or _false(value):
            return (
                "standard_conforming_strings cannot be turned off through "
                "the gateway; write E'...' strings for backslash escapes"
            )
        return None
    if value is None and setting in READING_SETTINGS:
        return f"{setting} can only be set to a literal value"
    return None


def refusal(
    statements: Iterable[Statement],
    own_roles: frozenset[str],
    settable_roles: frozenset[str] = frozenset(),
) -> str | None:
    """
    Why the built-in protections refuse these statements (sent together),
    as a message starting with L{PREFIX}; None if they do not.

    @param own_roles: the gateway's upstream role(s) on this target.
    @param settable_roles: roles a client may C{SET ROLE} / C{SET SESSION
        AUTHORIZATION} to (the target's C{settable_roles} option).
    """
    for statement in statements:
        for found in statement.sensitive:
            why = _check(found, own_roles, settable_roles)
            if why is not None:
                return PREFIX + why
    return None
