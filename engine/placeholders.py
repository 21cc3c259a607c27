"""`?` placeholders (SQLite's, so Ploy's) as psycopg's `%s`, only where SQL would read them.

psycopg reads `%` everywhere in a query with parameters, quotes and comments included, so
every `%` is doubled; a `?` becomes `%s` only outside PostgreSQL's string constants ('...',
E'...', $tag$...$tag$), quoted identifiers ("...") and comments (-- and nested /* */).
"""

from __future__ import annotations

import re
from functools import lru_cache

_TOKEN = re.compile(
    r"""
    (?P<quoted>
        (?<![\w$])[eE]'(?:[^'\\]|\\.|'')*(?:'|\Z)       # E'...', with backslash escapes
      | '(?:[^']|'')*(?:'|\Z)                           # '...' (and B'', X'', U&'')
      | "(?:[^"]|"")*(?:"|\Z)                           # "a quoted identifier"
      | (?<![\w$])\$(?P<tag>(?:[^\W\d]\w*)?)\$[\s\S]*?(?:\$(?P=tag)\$|\Z)   # $tag$...$tag$
      | --[^\n]*                                        # a comment to the end of the line
    )
    | (?P<comment>/\*)
    | (?P<numbered>\?\d+)
    | (?P<mark>\?)
    """,
    re.VERBOSE,
)
_COMMENT_EDGE = re.compile(r"/\*|\*/")


class PlaceholderError(ValueError):
    """A placeholder form that only SQLite reads (`?1`)."""


@lru_cache(maxsize=1024)
def to_pyformat(sql: str) -> str:
    """`sql` with its `?` placeholders as `%s` and every `%` doubled, for psycopg."""
    parts: list[str] = []
    position = 0
    while match := _TOKEN.search(sql, position):
        parts.append(_escape(sql[position : match.start()]))
        if match["numbered"]:
            raise PlaceholderError(
                f"numbered placeholders such as {match['numbered']} are not supported on a "
                "PostgreSQL binding: use one ? per parameter, in order"
            )
        if match["mark"]:
            parts.append("%s")
            position = match.end()
        elif match["comment"]:
            end = _comment_end(sql, match.end())
            parts.append(_escape(sql[match.start() : end]))
            position = end
        else:
            parts.append(_escape(match[0]))
            position = match.end()
    parts.append(_escape(sql[position:]))
    return "".join(parts)


def _escape(text: str) -> str:
    return text.replace("%", "%%")


def _comment_end(sql: str, position: int) -> int:
    """Where a /* comment opened just before `position` ends; PostgreSQL's comments nest."""
    depth = 1
    for edge in _COMMENT_EDGE.finditer(sql, position):
        depth += 1 if edge[0] == "/*" else -1
        if depth == 0:
            return edge.end()
    return len(sql)  # unterminated: the server reports it
