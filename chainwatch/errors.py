"""Exceptions for broken input and broken systems.

A chain that merely validates badly is not an exception: the policy returns
that as a decision. These are for files that cannot be read at all.
"""

__all__ = ["ChainwatchError", "InputError", "OutputError", "reason_of"]


class ChainwatchError(Exception):
    """Base class; ``str(error)`` is one line meant for a person."""

    exit_code = 2


class InputError(ChainwatchError):
    """A file or argument that cannot be used; the message names it."""


class OutputError(ChainwatchError):
    """The output directory cannot be used (not a directory, not ours, not writable)."""


def reason_of(error: Exception) -> str:
    """One line for a person: an OSError's strerror ("No space left on device"), else the message."""
    if isinstance(error, OSError) and error.strerror:
        return error.strerror
    return str(error)
