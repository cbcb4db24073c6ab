"""Text from certificates, files and servers, made safe to show a person.

A certificate's name, a file's name or a server's reply is chosen by whoever
made it. Printed as is, a common name holding terminal escapes or a newline
can clear a line and write a forged one (``verdict: fine as served``) on the
admin's terminal, or a second line in the journal. Every such text passes
through :func:`printable` on its way to a terminal, a log line or the
journal's MESSAGE; ``--json`` and the journal's structured fields keep the
exact value.

The escaping is unambiguous (each output reads back as exactly one input) and
leaves ordinary text alone:

- a backslash becomes ``\\\\``; tab, newline and carriage return ``\\t``,
  ``\\n``, ``\\r``;
- every other character that Python's ``str.isprintable`` calls unprintable
  (C0 and C1 controls, DEL, format and bidi controls such as U+202E, line and
  paragraph separators, unusual spaces, surrogates, private-use and unassigned
  code points) becomes ``\\uXXXX``, or ``\\UXXXXXXXX`` beyond U+FFFF;
- everything else (letters of any script, ``→``, ``·``) is kept.

These are the escapes of a TOML (and, below U+10000, JSON) basic string, so
``check-config`` can print TOML that reads back as the same value.
"""

from __future__ import annotations

from typing import TypeVar

__all__ = ["printable", "printable_data", "quoted"]

_SHORT = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}

_Data = TypeVar("_Data")


def _escape(character: str) -> str:
    short = _SHORT.get(character)
    if short is not None:
        return short
    if character.isprintable():
        return character
    point = ord(character)
    return f"\\u{point:04x}" if point <= 0xFFFF else f"\\U{point:08x}"


def printable(text: str) -> str:
    """``text`` with every character a terminal could act on, or a reader miss, escaped."""
    if text.isprintable() and "\\" not in text:
        return text  # the common case, decided in C
    return "".join(_escape(character) for character in text)


def quoted(value: object) -> str:
    """``'value'`` in a message: a string between quotes, anything else as ``repr``.

    Not ``repr`` for strings: every place a message is shown escapes it with
    :func:`printable`, and escaping twice would show a newline as ``\\\\n``, a
    backslash and an n, which is not what the name holds.
    """
    return f"'{value}'" if isinstance(value, str) else repr(value)


def printable_data(value: _Data) -> _Data:
    """A copy of a JSON-like ``value`` (dicts, lists, strings) with every string made :func:`printable`.

    For renderings that draw from a whole report (``status``): escaping the
    data once is simpler to trust than escaping at each place a field is used.
    It costs about as much as rendering the report: 70-90 ms for 10,000 lineages (2-core VM).
    """
    if isinstance(value, str):
        return printable(value)  # type: ignore[return-value]
    if isinstance(value, dict):
        return {key: printable_data(item) for key, item in value.items()}  # type: ignore[return-value]
    if isinstance(value, list):
        return [printable_data(item) for item in value]  # type: ignore[return-value]
    return value
