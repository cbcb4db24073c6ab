"""What every command reads from its arguments: the time, the configuration, colour, exit codes."""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys

from chainwatch.config import Config, load_config
from chainwatch.errors import InputError
from chainwatch.printable import quoted

__all__ = ["EXIT_DEGRADED", "EXIT_OK", "EXIT_USAGE", "at_of", "config_of", "parse_time", "use_colour"]

EXIT_OK = 0
EXIT_DEGRADED = 1
EXIT_USAGE = 2


def parse_time(text: str) -> dt.datetime:
    """``2021-10-01`` (midnight UTC) or ``2021-10-01T12:00:00Z``; naive means UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"--at {quoted(text)}: not a time; use 2021-10-01 or 2021-10-01T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


def at_of(args: argparse.Namespace) -> dt.datetime:
    """``--at``, or now."""
    return parse_time(args.at) if args.at else dt.datetime.now(dt.UTC)


def config_of(args: argparse.Namespace) -> Config:
    """The configuration every command shares: ``--config``, else the default file when it exists."""
    return load_config(args.config, required=args.config is not None)


def use_colour(choice: str) -> bool:
    return choice == "always" or (choice == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))
