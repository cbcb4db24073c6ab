"""The ``chainwatch`` command line.

Exit codes of ``trim`` and ``explain``: 0 a chain was produced; 1 it was
produced but clients will not all accept it (incomplete, leaf expired or not
yet valid); 2 bad input or usage. ``status`` follows the monitoring plugin
convention (0 ok, 1 warning, 2 critical, 3 unknown). Errors are one line on
standard error, never a traceback.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from chainwatch import __version__
from chainwatch.agent import Agent
from chainwatch.certificate import Cert
from chainwatch.config import DEFAULT_CONFIG, Config, load_config, output_dir_hint, render_config
from chainwatch.consumer_config import dovecot_snippet, dovecot_version, postfix_snippet
from chainwatch.consumers import ConsumerHook, affected
from chainwatch.errors import ChainwatchError, InputError
from chainwatch.explain import Palette, render_dot, render_tree
from chainwatch.journal import Event, Journal
from chainwatch.lineage import list_lineages, valid_name
from chainwatch.metrics import write_metrics
from chainwatch.pem import read_chain
from chainwatch.policy import Decision, Distrust, Mode, Policy, WarningCode, decide
from chainwatch.private_key import public_key_of
from chainwatch.probe import ProbeError, fetch_chain, parse_endpoint
from chainwatch.reconcile import Outcome, Processor
from chainwatch.report import decision_json, dropped_line, iso, warning_lines
from chainwatch.state import StateFile
from chainwatch.status import render_status, status_report
from chainwatch.trust import DEFAULT_STORE, load_stores

__all__ = ["main", "parse_time"]

EXIT_OK = 0
EXIT_DEGRADED = 1
EXIT_USAGE = 2
EXIT_SOFTWARE = 70  # sysexits.h EX_SOFTWARE

_DEGRADING = (WarningCode.INCOMPLETE, WarningCode.LEAF_EXPIRED, WarningCode.LEAF_NOT_YET_VALID)


def parse_time(text: str) -> dt.datetime:
    """``2021-10-01`` (midnight UTC) or ``2021-10-01T12:00:00Z``; naive means UTC."""
    value = text.strip()
    if value.endswith(("Z", "z")):
        value = value[:-1] + "+00:00"
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InputError(f"--at {text!r}: not a time; use 2021-10-01 or 2021-10-01T12:00:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return moment.astimezone(dt.UTC)


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one line, like every other error."""

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(EXIT_USAGE, f"{self.prog}: {message} (see '{self.prog} --help')\n")


_CHAIN_HELP = """\
The chain is certbot's fullchain.pem or any PEM file a server sends. Each
--trust-store is one kind of client (default: Debian's ca-certificates.crt);
give several to keep what any of them needs.

reasons a certificate is dropped:
  anchor             self-signed root: clients bring their own
  duplicate          the same certificate again
  unrelated          on no path from the leaf (also: right name, wrong key)
  expired            itself expired or not yet valid
  issuer-expired     cross-sign whose issuer expired (DST Root CA X3, AddTrust)
  issuer-distrusted  cross-sign whose issuer is on the --distrust list
  issuer-untrusted   cross-sign whose issuer no configured store knows
  not-needed         --mode minimal: every store validates without it

exit status: 0 chain produced, 1 produced but incomplete or leaf not valid,
2 bad input or usage.
"""


def _add_chain_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("file", type=Path, metavar="FILE", help="PEM chain file, leaf and issuers")
    parser.add_argument("--key", type=Path, metavar="KEY", help="the server's private key: picks the leaf")
    parser.add_argument("--at", type=str, metavar="TIME", help="judge at this time (default now), e.g. 2021-10-01")
    parser.add_argument(
        "--trust-store",
        type=Path,
        action="append",
        metavar="BUNDLE",
        help=f"PEM bundle of a client's roots; repeatable (default {DEFAULT_STORE})",
    )
    parser.add_argument(
        "--mode",
        choices=[mode.value for mode in Mode],
        default=Mode.SAFE.value,
        help="safe (default) keeps cross-signs some store may need; minimal drops all no store needs",
    )
    parser.add_argument(
        "--distrust",
        action="append",
        default=[],
        metavar="FP_OR_DN",
        help="treat this anchor as distrusted: SHA-256 fingerprint or subject DN; repeatable",
    )
    parser.add_argument(
        "--horizon-days", type=int, default=21, metavar="DAYS", help="warn about expiry this close (default 21)"
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="chainwatch",
        description="Serve certificate chains that every configured client can validate.",
        epilog="Run 'chainwatch COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"chainwatch {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    trim = commands.add_parser(
        "trim",
        help="print the sanitized chain",
        description="Print the sanitized chain as PEM on standard output; "
        "each dropped certificate and each warning as one line on standard error.",
        epilog=_CHAIN_HELP
        + """
examples:
  chainwatch trim /etc/letsencrypt/live/mail.example.org/fullchain.pem > served.pem
  chainwatch trim fullchain.pem --at 2021-10-01 --json
  chainwatch trim fullchain.pem --trust-store /etc/ssl/certs/ca-certificates.crt \\
      --trust-store old-android.pem --mode minimal
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_chain_options(trim)
    trim.add_argument("--json", action="store_true", help="print one JSON object instead of PEM")

    explain = commands.add_parser(
        "explain",
        help="show why each certificate is served or dropped",
        description="Draw the tree from the leaf up through every candidate issuer, "
        "with each certificate's validity, key and verdict.",
        epilog=_CHAIN_HELP
        + """
examples:
  chainwatch explain fullchain.pem
  chainwatch explain fullchain.pem --at 2021-10-01 --trust-store old-roots.pem
  chainwatch explain fullchain.pem --format dot | dot -Tsvg > chain.svg
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _add_chain_options(explain)
    explain.add_argument("--format", choices=["text", "dot"], default="text", help="text (default) or Graphviz dot")
    explain.add_argument("--json", action="store_true", help="print the decision as JSON")
    explain.add_argument(
        "--color", choices=["auto", "always", "never"], default="auto", help="colour the tree (default: on a terminal)"
    )
    _add_service_commands(commands)
    return parser


_CONFIG_HELP = f"configuration file (default {DEFAULT_CONFIG}; without it, built-in defaults)"


def _add_service_commands(commands: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    run = commands.add_parser(
        "run",
        help="watch certbot's lineages and publish sanitized copies (the agent)",
        description="Reconcile every lineage, then follow changes with inotify until SIGTERM. "
        "SIGHUP re-reads the configuration. systemd runs this as chainwatch.service.",
        epilog="""examples:
  chainwatch run
  chainwatch run --config /etc/chainwatch/chainwatch.toml
  chainwatch run --config demo.toml   # see README: the agent on the demo tree
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    run.add_argument("--config", type=Path, metavar="FILE", help=_CONFIG_HELP)

    sync = commands.add_parser(
        "sync",
        help="one reconcile pass, then exit (also a certbot deploy hook)",
        description="Process the named lineages (default: $RENEWED_LINEAGE when certbot runs us as a "
        "deploy hook, else all) through the same code as the agent, then exit.",
        epilog="""exit status: 0 all published or unchanged, 1 some served chain has warnings,
2 some lineage was not published (see the messages) or bad usage.

examples:
  chainwatch sync
  chainwatch sync mail.example.org
  certbot renew --deploy-hook 'chainwatch sync'
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sync.add_argument("lineages", nargs="*", metavar="LINEAGE", help="lineage names under the live directory")
    sync.add_argument("--config", type=Path, metavar="FILE", help=_CONFIG_HELP)

    status = commands.add_parser(
        "status",
        help="what is served, since when, and whether to worry",
        description="Show each lineage: leaf and expiry, the served chain, what was dropped and why, "
        "when it was published, and its state; and whether the agent runs.",
        epilog="""exit status (monitoring plugin convention): 0 ok, 1 warning, 2 critical,
3 unknown (nothing published yet, or no such lineage).

examples:
  chainwatch status
  chainwatch status mail.example.org --json
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    status.add_argument("lineages", nargs="*", metavar="LINEAGE", help="only these lineages")
    status.add_argument("--json", action="store_true", help="print one JSON object")
    status.add_argument("--config", type=Path, metavar="FILE", help=_CONFIG_HELP)
    status.add_argument(
        "--color", choices=["auto", "always", "never"], default="auto", help="colour (default: on a terminal)"
    )

    check = commands.add_parser(
        "check-config",
        help="validate the configuration and print the effective one",
        description="Read the configuration, check every key and named file, and print the effective "
        "configuration (defaults filled in) as TOML.",
        epilog="examples:\n  chainwatch check-config\n  chainwatch check-config --config /tmp/new.toml\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    check.add_argument("--config", type=Path, metavar="FILE", help=_CONFIG_HELP)

    probe = commands.add_parser(
        "probe",
        help="show the chain a server sends now, and what chainwatch thinks of it",
        description="Connect to each endpoint (STARTTLS spoken for imap+starttls and smtp+starttls), "
        "read the certificate chain it sends, and judge it with the trim policy; compare it with "
        "what chainwatch published when the state knows the lineage. Without endpoints, the "
        "configured consumers' probes are used.",
        epilog="""endpoints: imaps://HOST[:993]  imap+starttls://HOST[:143]  smtps://HOST[:465]
           smtp+starttls://HOST[:587]  pop3s://HOST[:995]  https://HOST[:443]

exit status: 0 every endpoint serves a chain that needs no trimming (and matches
what was published), 1 some chain would be trimmed or has warnings, 2 some
endpoint could not be probed, or serves something else than was published.

examples:
  chainwatch probe imaps://mail.example.org --name mail.example.org
  chainwatch probe smtp+starttls://127.0.0.1:25 --name mail.example.org --json
  chainwatch probe            # every probe configured for the consumers
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    probe.add_argument("endpoints", nargs="*", metavar="ENDPOINT", help="where to connect")
    probe.add_argument("--name", metavar="SNI", help="server name to ask for (default: the endpoint's host)")
    probe.add_argument("--at", type=str, metavar="TIME", help="judge at this time (default now)")
    probe.add_argument("--timeout", type=float, default=10.0, metavar="S", help="per connection (default 10 s)")
    probe.add_argument("--json", action="store_true", help="print one JSON object")
    probe.add_argument("--config", type=Path, metavar="FILE", help=_CONFIG_HELP)

    snippet = commands.add_parser(
        "consumer-config",
        help="print the Dovecot or Postfix lines that serve the published files",
        description="Print configuration lines to paste, pointing at the stable paths under the "
        "output directory. The installed Dovecot version (2.3 or 2.4) is detected when possible.",
        epilog="""examples:
  chainwatch consumer-config dovecot
  chainwatch consumer-config postfix mail.example.org imap.example.org
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    snippet.add_argument("server", choices=["dovecot", "postfix"], help="which server")
    snippet.add_argument("lineages", nargs="*", metavar="LINEAGE", help="default: every published lineage")
    snippet.add_argument("--dovecot-version", metavar="X.Y", help="override detection (2.3 or 2.4)")
    snippet.add_argument("--config", type=Path, metavar="FILE", help=_CONFIG_HELP)


def _decide(args: argparse.Namespace) -> tuple[Decision, dt.datetime]:
    at = parse_time(args.at) if args.at else dt.datetime.now(dt.UTC)
    if args.horizon_days < 0:
        raise InputError("--horizon-days: must not be negative")
    certs = read_chain(args.file)
    leaf_key = public_key_of(args.key) if args.key else None
    stores = load_stores(args.trust_store or [DEFAULT_STORE])
    policy = Policy(Mode(args.mode), Distrust(args.distrust), dt.timedelta(days=args.horizon_days))
    try:
        return decide(certs, stores, at, policy, leaf_key), at
    except InputError as error:
        raise InputError(f"{args.file}: {error}") from None


def _exit_status(decision: Decision) -> int:
    return EXIT_DEGRADED if any(decision.has(code) for code in _DEGRADING) else EXIT_OK


def _trim(args: argparse.Namespace) -> int:
    decision, _ = _decide(args)
    if args.json:
        sys.stdout.write(json.dumps(decision_json(decision), indent=2) + "\n")
    else:
        for verdict in decision.dropped:
            print(f"chainwatch: {dropped_line(verdict)}", file=sys.stderr)
        for line in warning_lines(decision):
            print(f"chainwatch: {line}", file=sys.stderr)
        sys.stdout.buffer.write(decision.pem())
    return _exit_status(decision)


def _explain(args: argparse.Namespace) -> int:
    decision, at = _decide(args)
    if args.json:
        sys.stdout.write(json.dumps(decision_json(decision), indent=2) + "\n")
    elif args.format == "dot":
        sys.stdout.write(render_dot(decision, at))
    else:
        sys.stdout.write(render_tree(decision, at, str(args.file), Palette(_use_colour(args.color))))
    return _exit_status(decision)


def _config(args: argparse.Namespace) -> Config:
    return load_config(args.config, required=args.config is not None)


def _use_colour(choice: str) -> bool:
    return choice == "always" or (choice == "auto" and sys.stdout.isatty() and not os.environ.get("NO_COLOR"))


class _AfterBatch:
    """Reload and probe consumers, then refresh the metrics file."""

    def __init__(self) -> None:
        self.consumers = ConsumerHook()

    def __call__(
        self, processor: Processor, outcomes: list[Outcome], keepalive: Callable[[], None] = lambda: None
    ) -> dict[str, dt.datetime]:
        retries = self.consumers(processor, outcomes, keepalive)
        target = processor.config.metrics_textfile
        if target is not None:
            try:
                write_metrics(target, processor.state.data)
            except OSError as error:
                processor.journal.log(Event.ERROR, f"cannot write metrics to {target}: {error.strerror}")
        return retries


def _run(args: argparse.Namespace) -> int:
    config = _config(args)
    journal = Journal()
    return Agent(config, args.config, journal, after_batch=_AfterBatch()).run()


def _sync(args: argparse.Namespace) -> int:
    config = _config(args)
    names = list(args.lineages)
    renewed = os.environ.get("RENEWED_LINEAGE")
    if not names and renewed:
        names = [Path(renewed).name]
    for name in names:
        if not valid_name(name):
            raise InputError(f"{name!r}: not a lineage name")
    processor = Processor(config, Journal())
    with processor.exclusive():
        outcomes = processor.process_batch(names or list_lineages(config.live_dir))
        processor.checkpoint()
        _AfterBatch()(processor, outcomes)
        synced = [o.lineage for o in outcomes]
        troubled = [
            f"{c.name} in error"
            for c in config.consumers
            if affected(c, synced) and processor.state.consumer(c.name).get("state") == "error"
        ] + [f"a new version of {name} waits" for name in synced if processor.state.lineage(name).get("pending")]
    counts: dict[str, int] = {}
    for outcome in outcomes:
        counts[str(outcome.event)] = counts.get(str(outcome.event), 0) + 1
    summary = ", ".join(f"{n} {event}" for event, n in sorted(counts.items())) or f"no lineage under {config.live_dir}"
    print(f"chainwatch sync: {summary}")
    if troubled:
        print(f"chainwatch sync: {'; '.join(troubled)} (see 'chainwatch status')")
    if troubled or any(o.event in (Event.REJECTED, Event.INCONSISTENT) for o in outcomes):
        return EXIT_USAGE
    if any(o.warned for o in outcomes):
        return EXIT_DEGRADED
    return EXIT_OK


def _status(args: argparse.Namespace) -> int:
    try:
        config = _config(args)
        output_dir, horizon, config_error = config.output_dir, config.horizon_days, None
        consumers: list[str] | None = [c.name for c in config.consumers]
    except ChainwatchError as error:
        output_dir, horizon, config_error = output_dir_hint(args.config), Config().horizon_days, str(error)
        consumers = None
    report = status_report(output_dir / "state.json", args.lineages, horizon, consumers=consumers)
    if config_error:
        report["config_error"] = config_error
        report["exit"] = max(report["exit"], 1) if report["exit"] != 3 else 3
        print(f"chainwatch: warning: the configuration is invalid: {config_error}", file=sys.stderr)
    if args.json:
        sys.stdout.write(json.dumps(report, indent=2) + "\n")
    else:
        sys.stdout.write(render_status(report, Palette(_use_colour(args.color))))
    code: int = report["exit"]
    return code


def _probe(args: argparse.Namespace) -> int:
    config = _config(args)
    at = parse_time(args.at) if args.at else dt.datetime.now(dt.UTC)
    targets = [(parse_endpoint(text), args.name) for text in args.endpoints]
    if not targets:
        state = StateFile.read(config.output_dir / "state.json") or {}
        for consumer in config.consumers:
            for text in consumer.probe:
                for record in (state.get("lineages") or {}).values():
                    for name in (record.get("leaf") or {}).get("names", [])[:1]:
                        targets.append((parse_endpoint(text), name))
        if not targets:
            raise InputError("no endpoint given and no probe configured (see 'chainwatch probe --help')")
    stores = load_stores(config.trust_stores)
    policy = config.trim_policy()
    results, worst = [], EXIT_OK
    for endpoint, name in targets:
        server_name = name or endpoint.host
        entry: dict[str, object] = {"endpoint": str(endpoint), "server_name": server_name}
        try:
            served = fetch_chain(endpoint, server_name, args.timeout)
        except ProbeError as error:
            entry.update(ok=False, error=str(error))
            worst = EXIT_USAGE
            results.append(entry)
            continue
        decision = decide(served, stores, at, policy)
        would_trim = list(decision.chain) != served
        entry.update(ok=not would_trim and not decision.warnings, served=[_served(c) for c in served])
        entry.update(decision_json(decision))
        if would_trim or decision.warnings:
            worst = max(worst, EXIT_DEGRADED)
        results.append(entry)
    if args.json:
        sys.stdout.write(json.dumps({"exit": worst, "endpoints": results}, indent=2) + "\n")
    else:
        for entry in results:
            sys.stdout.write(_probe_text(entry))
    return worst


def _served(cert: Cert) -> dict[str, str]:
    return {"subject": cert.subject, "issuer": cert.issuer, "sha256": cert.sha256, "not_after": iso(cert.not_after)}


def _probe_text(entry: dict[str, Any]) -> str:
    head = f"{entry['endpoint']} (SNI {entry['server_name']})"
    if "error" in entry:
        return f"{head}: {entry['error']}\n"
    lines = [f"{head} sends:"]
    for index, cert in enumerate(entry["served"], 1):
        lines.append(f"  #{index} {cert['subject']}  (issued by {cert['issuer']}; until {cert['not_after']})")
    for drop in entry["dropped"]:
        lines.append(f"  would drop {drop['subject']}: {drop['reason']}: {drop['detail']}")
    for warning in entry["warnings"]:
        lines.append(f"  warning: {warning['code']}: {warning['message']}")
    lines.append("  verdict: fine as served" if entry["ok"] else "  verdict: chainwatch would serve this differently")
    return "\n".join(lines) + "\n"


def _consumer_config(args: argparse.Namespace) -> int:
    config = _config(args)
    state = StateFile.read(config.output_dir / "state.json") or {}
    records = state.get("lineages") or {}
    chosen = list(args.lineages) or sorted(records)
    if not chosen:
        raise InputError(f"no lineage published yet under {config.output_dir}; name one: consumer-config dovecot NAME")
    pairs = [(name, (records.get(name, {}).get("leaf") or {}).get("names") or [name]) for name in chosen]
    if args.server == "dovecot":
        sys.stdout.write(dovecot_snippet(config.output_dir, pairs, args.dovecot_version or dovecot_version()))
    else:
        sys.stdout.write(postfix_snippet(config.output_dir, pairs))
    return EXIT_OK


def _check_config(args: argparse.Namespace) -> int:
    sys.stdout.write(render_config(_config(args)))
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    parser = _parser()
    args = parser.parse_args(argv)
    handlers = {
        "trim": _trim,
        "explain": _explain,
        "run": _run,
        "sync": _sync,
        "status": _status,
        "check-config": _check_config,
        "probe": _probe,
        "consumer-config": _consumer_config,
    }
    if args.command not in handlers:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return handlers[args.command](args)
    except ChainwatchError as error:
        print(f"chainwatch: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:
        # The reader went away (``| head``); that is not our failure.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except KeyboardInterrupt:
        return 130
    except Exception as error:
        if os.environ.get("CHAINWATCH_DEBUG"):
            raise
        # A bug, not bad input: one line for the journal, and how to see more.
        print(
            f"chainwatch: internal error: {type(error).__name__}: {error} "
            "(run with CHAINWATCH_DEBUG=1 for a traceback, and please report it)",
            file=sys.stderr,
        )
        return EXIT_SOFTWARE
