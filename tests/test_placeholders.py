"""`?` placeholders as psycopg's `%s`: translated only where PostgreSQL reads a placeholder."""

from __future__ import annotations

import pytest

from engine.placeholders import PlaceholderError, to_pyformat

CASES = [
    ("SELECT ?", "SELECT %s"),
    ("INSERT INTO t (a, b) VALUES (?, ?)", "INSERT INTO t (a, b) VALUES (%s, %s)"),
    ("SELECT 5 % 2, ?", "SELECT 5 %% 2, %s"),
    ("SELECT '?', ?", "SELECT '?', %s"),
    ("SELECT 'it''s ?', ?", "SELECT 'it''s ?', %s"),
    ("SELECT '%' || ?", "SELECT '%%' || %s"),
    ("SELECT name FROM t WHERE name LIKE '%?%' AND id = ?", None),
    ('SELECT "odd?name" FROM t WHERE x = ?', 'SELECT "odd?name" FROM t WHERE x = %s'),
    ('SELECT "a""?" , ?', 'SELECT "a""?" , %s'),
    ("SELECT E'\\'?', ?", "SELECT E'\\'?', %s"),
    ("SELECT e'a\\\\', ?", "SELECT e'a\\\\', %s"),
    ("SELECT $$ ? ' $$, ?", "SELECT $$ ? ' $$, %s"),
    ("SELECT $fn$ ? $x$ ? $fn$, ?", "SELECT $fn$ ? $x$ ? $fn$, %s"),
    ("SELECT ? -- why?\n, ?", "SELECT %s -- why?\n, %s"),
    ("SELECT /* ? /* nested ? */ still ? */ ?", "SELECT /* ? /* nested ? */ still ? */ %s"),
    ("SELECT ?::int, x::text FROM t", "SELECT %s::int, x::text FROM t"),
    ("SELECT $1, a$b$c, ?", "SELECT $1, a$b$c, %s"),
    ("SELECT 'unterminated ?", "SELECT 'unterminated ?"),
    ("SELECT %s, %(name)s", "SELECT %%s, %%(name)s"),
]


@pytest.mark.parametrize(("sql", "expected"), CASES)
def test_question_marks_become_placeholders_only_outside_quotes_and_comments(sql, expected):
    if expected is None:
        expected = "SELECT name FROM t WHERE name LIKE '%%?%%' AND id = %s"
    assert to_pyformat(sql) == expected


def test_numbered_placeholders_are_refused_with_the_fix():
    with pytest.raises(PlaceholderError, match=r"\?1 are not supported .* use one \? per"):
        to_pyformat("SELECT ?1, ?2")
