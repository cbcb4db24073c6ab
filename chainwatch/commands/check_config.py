"""``check-config``: validate the configuration and print the effective one."""

from __future__ import annotations

import argparse
import sys

from chainwatch.commands.options import EXIT_OK, config_of
from chainwatch.config import render_config
from chainwatch.journal import under_journald
from chainwatch.runtime import build_runtime, runtime_warnings

__all__ = ["check_config"]


def check_config(args: argparse.Namespace) -> int:
    config = config_of(args)
    # What the agent builds at start and at each reload (ExecReload runs this
    # before it signals the agent): what passes here, the agent can use.
    runtime = build_runtime(config)
    for warning in runtime_warnings(runtime):
        _say_warning(warning)
    sys.stdout.write(render_config(config))
    return EXIT_OK


def _say_warning(text: str) -> None:
    """One line on standard error; under systemd "<4>" makes it a warning in the journal."""
    print(f"{'<4>' if under_journald(sys.stderr) else ''}chainwatch: warning: {text}", file=sys.stderr)
