"""``check-config``: validate the configuration and print the effective one."""

from __future__ import annotations

import argparse
import sys

from chainwatch.agent.journal import Event, Journal, under_journald
from chainwatch.agent.runtime_objects import build_runtime, reload_refused, runtime_warnings
from chainwatch.cli.options import EXIT_OK, config_of
from chainwatch.config import render_config
from chainwatch.errors import ChainwatchError

__all__ = ["check_config"]


def check_config(args: argparse.Namespace) -> int:
    try:
        config = config_of(args)
        # What the agent builds at start and at each reload (ExecReload runs this
        # before it signals the agent): what passes here, the agent can use.
        runtime = build_runtime(config)
    except ChainwatchError as error:
        if not args.for_reload:
            raise
        # The agent is never signalled: its event, with the agent's words, is said here.
        Journal().log(Event.CONFIG_REJECTED, reload_refused(error))
        code: int = error.exit_code
        return code
    for warning in runtime_warnings(runtime):
        _say_warning(warning)
    sys.stdout.write(render_config(config))
    return EXIT_OK


def _say_warning(text: str) -> None:
    """One line on standard error; under systemd "<4>" makes it a warning in the journal."""
    print(f"{'<4>' if under_journald(sys.stderr) else ''}chainwatch: warning: {text}", file=sys.stderr)
