"""
The "did you mean" hint of configuration errors.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = ["suggest"]


def suggest(word: str, choices: Iterable[str]) -> str:
    """
    Return C{" (did you mean X?)"} for the closest choice, or C{""}.
    """
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean {close[0]}?)" if close else ""
