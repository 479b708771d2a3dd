"""HTML from the Jinja2 templates in ``harness/templates``, autoescaped: every value is text, never markup."""

from __future__ import annotations

from datetime import UTC, datetime

import jinja2


def _dash(value: object) -> object:
    """A value the record lacks (None, "") shows as a dash rather than as an empty cell."""
    return "—" if value is None or value == "" else value


def _utc(timestamp: float) -> str:
    return datetime.fromtimestamp(timestamp, UTC).isoformat(timespec="seconds")


_ENV = jinja2.Environment(
    loader=jinja2.PackageLoader("harness", "templates"),
    autoescape=True,
    undefined=jinja2.StrictUndefined,  # a misspelt name fails the render instead of showing nothing
    trim_blocks=True,
    lstrip_blocks=True,
    keep_trailing_newline=True,
)
_ENV.filters.update(dash=_dash, utc=_utc)


def render(name: str, **context: object) -> str:
    """The template *name* rendered with *context* (plain data: autoescape escapes each value it shows)."""
    return _ENV.get_template(name).render(**context)
