"""``explain``: the decision ``trim`` makes on one chain, drawn as a tree (or dot, or JSON)."""

from __future__ import annotations

import argparse
import json
import sys

from chainwatch.cli.chain import decide_for, exit_status
from chainwatch.cli.options import use_colour
from chainwatch.palette import Palette
from chainwatch.policy.explain import render_dot, render_forecast, render_tree
from chainwatch.policy.forecast import forecast
from chainwatch.policy.report import decision_json, forecast_json

__all__ = ["explain"]


def explain(args: argparse.Namespace) -> int:
    judged = decide_for(args)
    decision, at = judged.decision, judged.at
    # Over the served chain's remaining life: past the leaf's expiry nothing is served.
    until = decision.leaf.not_after
    changes = (
        forecast(decision.chain, judged.clients, at, until, distrust=judged.policy.distrust)
        if args.forecast and until > at
        else ()
    )
    if args.json:
        document = decision_json(decision)
        if args.forecast:
            document["forecast"] = forecast_json(changes)
        sys.stdout.write(json.dumps(document, indent=2) + "\n")
    elif args.format == "dot":
        sys.stdout.write(render_dot(decision, at))
    else:
        palette = Palette(use_colour(args.color))
        sys.stdout.write(render_tree(decision, at, judged.source, palette))
        if args.forecast:
            sys.stdout.write(render_forecast(changes, at, until, palette))
    return exit_status(decision)
