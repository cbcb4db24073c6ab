"""``check-config``: validate the configuration and print the effective one."""

from __future__ import annotations

import argparse
import sys

from chainwatch.commands.options import EXIT_OK, config_of
from chainwatch.config import render_config

__all__ = ["check_config"]


def check_config(args: argparse.Namespace) -> int:
    sys.stdout.write(render_config(config_of(args)))
    return EXIT_OK
