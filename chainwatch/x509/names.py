"""How a certificate known by its names, not a CN, is named: one rule for
certificates read now (certificate.py) and for leaves recorded in state.json
before that rule existed (status.py), which must not import cryptography."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["EMPTY_NAME", "after_alt_names"]

EMPTY_NAME = "(empty name)"
"""What a certificate with nothing to go by is called."""


def after_alt_names(names: Sequence[str]) -> str | None:
    """The first of a certificate's own names, and "+N" for N more; None when it has none."""
    if not names:
        return None
    return names[0] if len(names) == 1 else f"{names[0]} +{len(names) - 1}"
