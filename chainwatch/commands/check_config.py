"""``check-config``: validate the configuration and print the effective one."""

from __future__ import annotations

import argparse
import sys

from chainwatch.atomic import group_id
from chainwatch.commands.options import EXIT_OK, config_of
from chainwatch.config import render_config
from chainwatch.errors import ChainwatchError, InputError

__all__ = ["check_config"]


def check_config(args: argparse.Namespace) -> int:
    config = config_of(args)
    # ExecReload runs this before it signals the agent, which would refuse
    # a group that does not exist: say so here, where `systemctl reload` shows it.
    try:
        group_id(config.key_group)
    except ChainwatchError as error:
        raise InputError(f"{config.source}: {error}") from None
    sys.stdout.write(render_config(config))
    return EXIT_OK
