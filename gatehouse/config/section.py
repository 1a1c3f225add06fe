"""
Reading one section of a configuration file (L{ConfigSection}) and
reporting what is wrong with it (L{Problem}, L{ConfigError}).
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar, overload

import attrs

from gatehouse._duration import parse_duration, parse_size
from gatehouse._suggest import suggest as _suggest


@attrs.frozen
class Problem:
    """
    One thing wrong with a configuration file.

    @ivar filename: The file, as the user named it.
    @ivar location: A key path such as C{listeners[0].port}, a position such
        as C{line 3, column 5}, or C{""} for the file as a whole.
    @ivar message: What is wrong, as one line.
    """

    filename: str
    location: str
    message: str

    def __str__(self) -> str:
        if self.location:
            return f"{self.filename}: {self.location}: {self.message}"
        return f"{self.filename}: {self.message}"


class ConfigError(Exception):
    """
    A configuration file could not be loaded.

    @ivar problems: Everything found wrong with it, at least one.
    """

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__(*self.problems)

    def lines(self) -> list[str]:
        """
        Return one line of text per problem, without line endings.
        """
        return [str(problem) for problem in self.problems]

    def __str__(self) -> str:
        return "\n".join(self.lines())


class _Problems:
    """
    The problems found so far in one file.
    """

    def __init__(self, filename: str) -> None:
        self.filename = filename
        self.found: list[Problem] = []

    def add(self, location: str, message: str) -> None:
        self.found.append(Problem(self.filename, location, message))


# Reading sections

_T = TypeVar("_T")
_MISSING: Any = object()


def _describe(value: object) -> str:
    """
    Name the type of a YAML value for an error message, with short values.
    """
    if value is None:
        return "null"
    if isinstance(value, bool):
        return f"a boolean ({str(value).lower()})"
    if isinstance(value, int):
        return f"an integer ({value})"
    if isinstance(value, float):
        return f"a number ({value})"
    if isinstance(value, str):
        shown = value if len(value) <= 40 else value[:37] + "..."
        return f"a string ({shown!r})"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    return f"a {type(value).__name__} ({value})"


def _format_duration(seconds: float) -> str:
    """
    Write C{seconds} the way a user would, for messages: C{5m}, C{200ms}.
    """
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60), ("s", 1)):
        if seconds >= size and seconds % size == 0:
            return f"{int(seconds // size)}{unit}"
    if seconds < 1:
        return f"{seconds * 1000:g}ms"
    return f"{seconds:g}s"


def _format_size(size: int) -> str:
    """
    Write C{size} bytes the way a user would, for messages: C{16MiB}.
    """
    for unit, scale in (("GiB", 1024**3), ("MiB", 1024**2), ("KiB", 1024)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return "1 byte" if size == 1 else f"{size} bytes"


class ConfigSection:
    """
    One mapping of the configuration file, with its key path.

    Every reader method takes a key, records it as known, and returns the
    checked value; when the value is wrong it reports a problem against the
    key's full path and returns the default instead.  L{finish} reports every
    key that no reader asked for as unknown, with a suggestion, here and in
    every nested section read from this one.

    @ivar path: This mapping's key path, for example C{listeners[0].options};
        C{""} for the top level.
    @ivar raw: The mapping as YAML parsed it.
    @ivar base_directory: Relative paths are resolved against this.
    """

    def __init__(
        self,
        raw: Mapping[Any, Any],
        path: str,
        problems: _Problems,
        base_directory: str,
    ) -> None:
        self.raw = raw
        self.path = path
        self.base_directory = base_directory
        self._problems = problems
        self._known: list[str] = []
        self._children: list[ConfigSection] = []
        self._finished = False

    # Reporting

    def key_path(self, key: str | None = None) -> str:
        """
        Return the full path of C{key} in this section, or of the section.
        """
        if key is None:
            return self.path
        return f"{self.path}.{key}" if self.path else key

    def problem(self, message: str, key: str | None = None) -> None:
        """
        Report that this section (or its C{key}) is wrong.
        """
        self._problems.add(self.key_path(key), message)

    @property
    def problem_count(self) -> int:
        """
        How many problems the whole file has so far.
        """
        return len(self._problems.found)

    def finish(self) -> None:
        """
        Report every key that was present but never read, here and in nested
        sections.  Idempotent.
        """
        if self._finished:
            return
        self._finished = True
        for key in self.raw:
            if key not in self._known:
                hint = _suggest(key, self._known) if isinstance(key, str) else ""
                self.problem(f"unknown key{hint}", str(key))
        for child in self._children:
            child.finish()

    # Generic access

    def get(self, key: str, *, required: bool = False) -> Any:
        """
        Return the raw value of C{key}, or C{None} if it is absent or null.

        @param required: Report a problem if the value is absent or null.
        """
        if key not in self._known:
            self._known.append(key)
        if key not in self.raw:
            if required:
                self.problem("required key is missing", key)
            return None
        value = self.raw[key]
        if value is None and required:
            self.problem("a value is required", key)
        return value

    def _typed(
        self,
        key: str,
        kind: type | tuple[type, ...],
        noun: str,
        default: Any,
        required: bool,
    ) -> Any:
        value = self.get(key, required=required)
        if value is None:
            return default
        kinds = kind if isinstance(kind, tuple) else (kind,)
        # YAML's true/false are Python bools, and bool is a subclass of int.
        wrong_bool = isinstance(value, bool) and bool not in kinds
        if wrong_bool or not isinstance(value, kinds):
            self.problem(f"expected {noun}, got {_describe(value)}", key)
            return default
        return value

    def _converted(
        self,
        key: str,
        kind: tuple[type, ...],
        noun: str,
        convert: Callable[[Any], _T],
        default: Any,
        required: bool,
    ) -> Any:
        value = self._typed(key, kind, noun, _MISSING, required)
        if value is _MISSING:
            return default
        try:
            return convert(value)
        except ValueError as e:
            self.problem(str(e), key)
            return default

    # Scalars

    @overload
    def string(
        self,
        key: str,
        default: str,
        *,
        required: bool = ...,
        pattern: re.Pattern[str] | None = ...,
        rule: str = ...,
    ) -> str: ...

    @overload
    def string(
        self,
        key: str,
        default: None = ...,
        *,
        required: bool = ...,
        pattern: re.Pattern[str] | None = ...,
        rule: str = ...,
    ) -> str | None: ...

    def string(
        self,
        key: str,
        default: str | None = None,
        *,
        required: bool = False,
        pattern: re.Pattern[str] | None = None,
        rule: str = "",
    ) -> str | None:
        """
        Read a non-empty string.

        @param pattern: If given, the whole string must match it; C{rule}
            describes it in the message.
        """
        found = self._typed(key, str, "a string", _MISSING, required)
        if found is _MISSING:
            return default
        value: str = found
        if not value:
            self.problem("must not be empty", key)
            return default
        if pattern is not None and not pattern.fullmatch(value):
            self.problem(f"{value!r} is not valid ({rule})", key)
            return default
        return value

    def strings(
        self,
        key: str,
        default: tuple[str, ...] = (),
        *,
        required: bool = False,
        single: bool = False,
    ) -> tuple[str, ...]:
        """
        Read a non-empty list of non-empty strings.

        @param single: Also accept one string on its own.
        """
        value = self.get(key, required=required)
        if value is None:
            return default
        if single and isinstance(value, str):
            value = [value]
        noun = "a string or a list of strings" if single else "a list of strings"
        if not isinstance(value, list):
            self.problem(f"expected {noun}, got {_describe(value)}", key)
            return default
        if not value:
            self.problem("must not be empty", key)
            return default
        result = []
        ok = True
        for index, item in enumerate(value):
            where = f"{key}[{index}]"
            if not isinstance(item, str):
                self.problem(f"expected a string, got {_describe(item)}", where)
                ok = False
            elif not item:
                self.problem("must not be empty", where)
                ok = False
            else:
                result.append(item)
        return tuple(result) if ok else default

    @overload
    def integer(
        self,
        key: str,
        default: int,
        *,
        required: bool = ...,
        minimum: int | None = ...,
        maximum: int | None = ...,
    ) -> int: ...

    @overload
    def integer(
        self,
        key: str,
        default: None = ...,
        *,
        required: bool = ...,
        minimum: int | None = ...,
        maximum: int | None = ...,
    ) -> int | None: ...

    def integer(
        self,
        key: str,
        default: int | None = None,
        *,
        required: bool = False,
        minimum: int | None = None,
        maximum: int | None = None,
    ) -> int | None:
        """
        Read an integer, optionally within C{minimum} and C{maximum}.
        """
        found = self._typed(key, int, "an integer", _MISSING, required)
        if found is _MISSING:
            return default
        value: int = found
        if (minimum is not None and value < minimum) or (
            maximum is not None and value > maximum
        ):
            if maximum is None:
                self.problem(f"{value} is less than {minimum}", key)
            elif minimum is None:
                self.problem(f"{value} is more than {maximum}", key)
            else:
                self.problem(f"{value} is not between {minimum} and {maximum}", key)
            return default
        return value

    def boolean(self, key: str, default: bool = False) -> bool:
        """
        Read C{true} or C{false}.
        """
        value: bool = self._typed(key, bool, "true or false", default, False)
        return value

    @overload
    def duration(
        self,
        key: str,
        default: float,
        *,
        required: bool = ...,
        positive: bool = ...,
        maximum: float | None = ...,
    ) -> float: ...

    @overload
    def duration(
        self,
        key: str,
        default: None = ...,
        *,
        required: bool = ...,
        positive: bool = ...,
        maximum: float | None = ...,
    ) -> float | None: ...

    def duration(
        self,
        key: str,
        default: float | None = None,
        *,
        required: bool = False,
        positive: bool = False,
        maximum: float | None = None,
    ) -> float | None:
        """
        Read a duration such as C{30s} and return it in seconds.

        @param positive: Refuse zero.
        """
        found = self._converted(
            key, (str, int, float), "a duration", parse_duration, _MISSING, required
        )
        if found is _MISSING:
            return default
        value: float = found
        if positive and value <= 0:
            self.problem("must be more than 0", key)
            return default
        if maximum is not None and value > maximum:
            self.problem(
                f"{_format_duration(value)} is more than the maximum of "
                f"{_format_duration(maximum)}",
                key,
            )
            return default
        return value

    @overload
    def size(
        self, key: str, default: int, *, required: bool = ..., minimum: int = ...
    ) -> int: ...

    @overload
    def size(
        self,
        key: str,
        default: None = ...,
        *,
        required: bool = ...,
        minimum: int = ...,
    ) -> int | None: ...

    def size(
        self,
        key: str,
        default: int | None = None,
        *,
        required: bool = False,
        minimum: int = 0,
    ) -> int | None:
        """
        Read a size such as C{16MiB} or C{4096} and return it in bytes.
        """
        found = self._converted(
            key, (str, int), "a size", parse_size, _MISSING, required
        )
        if found is _MISSING:
            return default
        value: int = found
        if value < minimum:
            self.problem(
                f"{_format_size(value)} is less than the minimum of "
                f"{_format_size(minimum)}",
                key,
            )
            return default
        return value

    def url(self, key: str, *, required: bool = False) -> str | None:
        """
        Read an C{http://} or C{https://} URL.
        """
        value = self.string(key, required=required)
        if value is not None and not re.match(r"https?://[^/?#\s]+", value):
            self.problem(f"{value!r} is not an http:// or https:// URL", key)
            return None
        return value

    def address(self, key: str, default: str) -> str:
        """
        Read an IPv4 or IPv6 address to listen on.
        """
        value = self.string(key, default)
        try:
            ipaddress.ip_address(value)
        except ValueError:
            self.problem(f"{value!r} is not an IP address", key)
            return default
        return value

    # Paths

    def file_path(self, key: str, *, required: bool = False) -> str | None:
        """
        Read a path, resolved against L{base_directory}; nothing is checked.
        """
        value = self.string(key, required=required)
        if value is None:
            return None
        return self.resolve(value)

    def resolve(self, value: str) -> str:
        """
        Make a path from the configuration absolute.
        """
        return os.path.normpath(
            os.path.join(self.base_directory, os.path.expanduser(value))
        )

    def readable_file(self, key: str, *, required: bool = False) -> str | None:
        """
        Read the path of a file that must exist and be readable.
        """
        path = self.file_path(key, required=required)
        if path is None:
            return None
        message = _check_readable_file(path)
        if message is not None:
            self.problem(message, key)
            return None
        return path

    def readable_files(self, key: str, *, required: bool = False) -> tuple[str, ...]:
        """
        Read a non-empty list of paths of files that must exist and be readable.
        """
        paths = []
        ok = True
        for index, value in enumerate(self.strings(key, required=required)):
            path = self.resolve(value)
            message = _check_readable_file(path)
            if message is not None:
                self.problem(message, f"{key}[{index}]")
                ok = False
            paths.append(path)
        return tuple(paths) if ok else ()

    def existing_directory(self, key: str, *, required: bool = False) -> str | None:
        """
        Read the path of a directory that must exist.
        """
        path = self.file_path(key, required=required)
        if path is None:
            return None
        if not os.path.exists(path):
            self.problem(f"{path} does not exist", key)
            return None
        if not os.path.isdir(path):
            self.problem(f"{path} is not a directory", key)
            return None
        return path

    # Nested structure

    def section(self, key: str, *, required: bool = False) -> ConfigSection | None:
        """
        Read a nested mapping; C{None} if it is absent or wrong.
        """
        value = self._typed(key, dict, "a mapping", None, required)
        if value is None:
            return None
        return self._child(value, self.key_path(key))

    def sections(self, key: str, *, required: bool = False) -> list[ConfigSection]:
        """
        Read a list of mappings, one L{ConfigSection} per usable item.
        """
        items = self._typed(key, list, "a list", [], required)
        result = []
        for index, item in enumerate(items):
            where = f"{self.key_path(key)}[{index}]"
            if isinstance(item, dict):
                result.append(self._child(item, where))
            else:
                self._problems.add(where, f"expected a mapping, got {_describe(item)}")
        return result

    def _child(self, raw: Mapping[Any, Any], path: str) -> ConfigSection:
        child = ConfigSection(raw, path, self._problems, self.base_directory)
        self._children.append(child)
        return child


def _check_readable_file(path: str) -> str | None:
    """
    Return what is wrong with C{path} as a file to read, or C{None}.
    """
    if not os.path.exists(path):
        return f"{path} does not exist"
    if not os.path.isfile(path):
        return f"{path} is not a file"
    try:
        with open(path, "rb"):
            pass
    except OSError as e:
        return f"{path} cannot be read: {e.strerror}"
    return None


# YAML
