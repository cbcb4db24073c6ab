"""The ``chainwatch`` command line: the parser, and which module runs each command.

Exit codes of ``trim`` and ``explain``: 0 a chain was produced; 1 it was
produced but clients will not all accept it (incomplete, leaf expired or not
yet valid); 2 bad input or usage. ``status`` follows the monitoring plugin
convention (0 ok, 1 warning, 2 critical, 3 unknown). Errors are one line on
standard error, never a traceback.

This module imports nothing heavy: ``_COMMANDS`` is the one place that says
which module a command needs, imported when it runs. Monitoring calls
``status`` every minute; it must not pay for cryptography or the agent.
"""

from __future__ import annotations

import argparse
import functools
import importlib
import os
import sys
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from chainwatch import __version__
from chainwatch.config import DEFAULT_CONFIG
from chainwatch.consumers.snippets import SERVERS
from chainwatch.errors import ChainwatchError
from chainwatch.policy.settings import DEFAULT_STORE, Mode
from chainwatch.printable import printable

__all__ = ["main"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_SOFTWARE = 70  # sysexits.h EX_SOFTWARE
UNKNOWN = 3  # status: the monitoring plugin convention's "unknown"


class _Parser(argparse.ArgumentParser):
    """argparse, but usage errors exit 2 with one line, like every other error."""

    def __init__(self, *args: Any, usage_exit: int = EXIT_USAGE, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.usage_exit = usage_exit

    def error(self, message: str) -> None:  # type: ignore[override]
        self.exit(self.usage_exit, f"{self.prog}: {printable(message)} (see '{self.prog} --help')\n")

    def _get_formatter(self) -> argparse.HelpFormatter:
        # argparse makes a formatter for every add_argument, and without a
        # width it imports shutil (with bz2, lzma and zlib) to ask for one.
        return self.formatter_class(prog=self.prog, width=_help_width())  # type: ignore[call-arg]


@functools.cache
def _help_width() -> int:
    """What shutil.get_terminal_size would say, less argparse's margin of 2."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        try:
            columns = os.get_terminal_size(sys.__stdout__.fileno()).columns  # type: ignore[union-attr]
        except (AttributeError, ValueError, OSError):
            columns = 0
    return (columns or 80) - 2


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
  covered            a served twin leads to every CA it leads to
  breaks-client      makes a configured client fail; every client that
                     validates with it validates without it

exit status: 0 chain produced, 1 produced but incomplete or leaf not valid,
2 bad input or usage.
"""


_CONFIG_HELP = f"configuration file, for every command (default {DEFAULT_CONFIG} when it exists)"


_CLIENTS_HELP = """
clients: each --client is a kind of client the chain is judged for: a shipped
profile (a dated trust store and how that client builds its paths) or a
[[client]] of the configuration. Without --client, the configuration's
[policy] clients and [[client]] tables are judged (default: a broad set,
from Android 7.1.1 and iOS 12 on); --list-clients lists them all.
"""


def _add_client_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--client",
        action="append",
        metavar="NAME",
        help="judge for this client (a shipped profile or a [[client]] of the configuration) "
        "instead of the configured ones; repeatable",
    )
    parser.add_argument(
        "--list-clients",
        action="store_true",
        help="list the clients: names, families, trust-store dates, path building, which are modelled",
    )


def _add_chain_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "file",
        type=Path,
        nargs="?",
        metavar="FILE",
        help="PEM chain file (leaf and issuers), or the name of a watched lineage",
    )
    parser.add_argument("--key", type=Path, metavar="KEY", help="the server's private key: picks the leaf")
    parser.add_argument("--at", type=str, metavar="TIME", help="judge at this time (default now), e.g. 2021-10-01")
    parser.add_argument(
        "--trust-store",
        type=Path,
        action="append",
        metavar="BUNDLE",
        help=f"PEM bundle of a client's roots; repeatable (default: the configuration's, else {DEFAULT_STORE})",
    )
    parser.add_argument(
        "--mode",
        choices=[mode.value for mode in Mode],
        help="safe (the default) keeps cross-signs some store may need; minimal drops all no store needs",
    )
    parser.add_argument(
        "--distrust",
        action="append",
        metavar="FP_OR_DN",
        help="treat this anchor as distrusted: SHA-256 fingerprint or subject DN; repeatable",
    )
    parser.add_argument(
        "--horizon-days",
        type=int,
        metavar="DAYS",
        help="warn about expiry this close (default: the configuration's, 21)",
    )
    _add_client_options(parser)


def _parser(full: Collection[str]) -> argparse.ArgumentParser:
    """The parser; only the commands in ``full`` get their options.

    Every add_argument costs a help formatter (and a terminal size query):
    defining all commands' options took a few milliseconds of every start.
    The command that runs is necessarily among the words of its command
    line, so defining those that appear there is enough to parse it exactly.
    """
    parser = _Parser(
        prog="chainwatch",
        description="Serve certificate chains that every configured client can validate.",
        epilog="Run 'chainwatch COMMAND --help' for a command's options and examples.",
    )
    parser.add_argument("--version", action="version", version=f"chainwatch {__version__}")
    parser.add_argument("--config", type=Path, metavar="FILE", help=_CONFIG_HELP)
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)

    trim = commands.add_parser(
        "trim",
        help="print the sanitized chain",
        description="Print the sanitized chain as PEM on standard output; "
        "each dropped certificate and each warning as one line on standard error.",
        epilog=_CHAIN_HELP
        + _CLIENTS_HELP
        + """
examples:
  chainwatch trim /etc/letsencrypt/live/mail.example.org/fullchain.pem > served.pem
  chainwatch trim fullchain.pem --at 2021-10-01 --json
  chainwatch trim fullchain.pem --trust-store /etc/ssl/certs/ca-certificates.crt \\
      --trust-store old-android.pem --mode minimal
  chainwatch trim fullchain.pem --client openssl-1.0.2-debian-9 --client android-7.1.1 --json
  chainwatch trim --list-clients
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if "trim" in full:
        _add_chain_options(trim)
        trim.add_argument("--json", action="store_true", help="print one JSON object instead of PEM")

    explain = commands.add_parser(
        "explain",
        help="show why each certificate is served or dropped",
        description="Draw the tree from the leaf up through every candidate issuer, "
        "with each certificate's validity, key and verdict.",
        epilog=_CHAIN_HELP
        + _CLIENTS_HELP
        + """
beside the tree, one line per client: whether it validates the file as given
(in its order, as a server would send it) and the served chain, and why not.
--forecast lists each moment over the served chain's life when a client stops
(or starts) validating it: a certificate or a root it relies on expires.

examples:
  chainwatch explain fullchain.pem
  chainwatch explain fullchain.pem --at 2021-10-01 --client openssl-1.0.2-debian-9
  chainwatch explain fullchain.pem --forecast
  chainwatch explain fullchain.pem --at 2021-10-01 --trust-store old-roots.pem
  chainwatch explain fullchain.pem --format dot | dot -Tsvg > chain.svg
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if "explain" in full:
        _add_chain_options(explain)
        explain.add_argument("--format", choices=["text", "dot"], default="text", help="text (default) or Graphviz dot")
        explain.add_argument("--json", action="store_true", help="print the decision as JSON")
        explain.add_argument(
            "--color",
            choices=["auto", "always", "never"],
            default="auto",
            help="colour the tree (default: on a terminal)",
        )
        explain.add_argument(
            "--forecast",
            action="store_true",
            help="list when each client stops or starts validating the served chain, over its remaining life",
        )
    _add_service_commands(commands, full)
    for name, command in commands.choices.items():
        if name in full:
            # Before or after the command name, as with git -C: SUPPRESS keeps the
            # one given before it when none follows.
            command.add_argument("--config", type=Path, metavar="FILE", default=argparse.SUPPRESS, help=_CONFIG_HELP)
    return parser


def _add_service_commands(commands: argparse._SubParsersAction, full: Collection[str]) -> None:  # type: ignore[type-arg]
    commands.add_parser(
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
    if "sync" in full:
        sync.add_argument("lineages", nargs="*", metavar="LINEAGE", help="lineage names under the live directory")

    status = commands.add_parser(
        "status",
        help="what is served, since when, and whether to worry",
        description="Show each lineage: leaf and expiry, the served chain, what was dropped and why, "
        "when it was published, and its state; and whether the agent runs.",
        epilog="""exit status (monitoring plugin convention): 0 ok, 1 warning, 2 critical,
3 unknown (nothing published yet, no such lineage, or a usage error).

examples:
  chainwatch status
  chainwatch status mail.example.org --json
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        # A monitoring system reads 2 as critical: a mistyped check is unknown.
        usage_exit=UNKNOWN,
    )
    if "status" in full:
        status.add_argument("lineages", nargs="*", metavar="LINEAGE", help="only these lineages")
        status.add_argument("--json", action="store_true", help="print one JSON object")
        status.add_argument(
            "--color", choices=["auto", "always", "never"], default="auto", help="colour (default: on a terminal)"
        )

    check = commands.add_parser(
        "check-config",
        help="validate the configuration and print the effective one",
        description="Read the configuration, build what the agent builds from it (trust stores, probe "
        "endpoints, unit names, sources), and print the effective configuration (defaults filled in) as TOML.",
        epilog="examples:\n  chainwatch check-config\n  chainwatch check-config --config /tmp/new.toml\n",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if "check-config" in full:
        check.add_argument(
            "--for-reload",
            action="store_true",
            help="as the unit's ExecReload: a refused file is journaled as the config-rejected event",
        )

    probe = commands.add_parser(
        "probe",
        help="show the chain a server sends now, and what chainwatch thinks of it",
        description="Connect to each endpoint (STARTTLS spoken for the +starttls schemes), "
        "read the certificate chain it sends, and judge it with the trim policy; when the state knows "
        "a lineage for the name asked (or for the leaf sent), say whether the server sends exactly "
        "what chainwatch published. Without endpoints, the configured consumers' probes are used, and "
        "(as root) a consumer skipped or in error found serving what is published is recorded as ok. "
        "Each configured client (or each --client) judges what is sent: which would fail on it, "
        "and which would validate it only by fetching a missing intermediate.",
        epilog="""endpoints: imaps://HOST[:993]  imap+starttls://HOST[:143]  pop3s://HOST[:995]
           pop3+starttls://HOST[:110]  smtps://HOST[:465]  smtp+starttls://HOST[:587]
           https://HOST[:443]  tls://HOST:PORT (any TLS service)
An IP address as HOST sends no SNI (as a mail client does) unless --name is given.

exit status: 0 every endpoint serves a chain that needs no trimming (and matches
what was published), 1 some chain would be trimmed or has warnings, 2 some
endpoint could not be probed, or serves something else than was published.

examples:
  chainwatch probe imaps://mail.example.org --name mail.example.org
  chainwatch probe smtp+starttls://127.0.0.1:25 --name mail.example.org --json
  chainwatch probe            # every probe configured for the consumers
  chainwatch probe imaps://mail.example.org --client openssl-1.0.2-debian-9
  chainwatch probe --list-clients
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if "probe" in full:
        probe.add_argument("endpoints", nargs="*", metavar="ENDPOINT", help="where to connect")
        probe.add_argument(
            "--name", metavar="SNI", help="server name to ask for (default: the endpoint's host; none for an IP)"
        )
        probe.add_argument("--at", type=str, metavar="TIME", help="judge at this time (default now)")
        probe.add_argument("--timeout", type=float, default=10.0, metavar="S", help="per connection (default 10 s)")
        probe.add_argument("--json", action="store_true", help="print one JSON object")
        _add_client_options(probe)

    snippet = commands.add_parser(
        "consumer-config",
        help="print the lines that make a server (Dovecot, Postfix, Exim, nginx, Apache, HAProxy) serve "
        "the published files",
        description="Print configuration lines to paste, pointing at the stable paths under the "
        "output directory, and the [[consumer]] table that reloads and probes the server. The installed "
        "version is detected where it changes the lines: Dovecot 2.3 or 2.4, Apache before 2.4.8 "
        "(a separate chain file), HAProxy before 2.1 (no runtime API: a reload).",
        epilog="""examples:
  chainwatch consumer-config dovecot
  chainwatch consumer-config postfix mail.example.org imap.example.org
  chainwatch consumer-config exim4 mail.example.org
  chainwatch consumer-config haproxy --server-version 2.0
""",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    if "consumer-config" in full:
        snippet.add_argument("server", choices=list(SERVERS), help="which server")
        snippet.add_argument("lineages", nargs="*", metavar="LINEAGE", help="default: every published lineage")
        snippet.add_argument("--server-version", metavar="X.Y", help="instead of the installed one")
        snippet.add_argument("--dovecot-version", metavar="X.Y", help="the same, for Dovecot (2.3 or 2.4)")


# What each command runs, as "module:function", imported only when it runs.
_COMMANDS = {
    "trim": "chainwatch.cli.chain:trim",
    "explain": "chainwatch.cli.explain:explain",
    "run": "chainwatch.cli.service:run",
    "sync": "chainwatch.cli.service:sync",
    "status": "chainwatch.cli.status:status",
    "check-config": "chainwatch.cli.check_config:check_config",
    "consumer-config": "chainwatch.cli.consumer_config:consumer_config",
    "probe": "chainwatch.cli.probe:probe",
}


def _handler(command: str, args: argparse.Namespace) -> Callable[[argparse.Namespace], int]:
    # Listing reads the catalogue only, whichever command asks.
    target = "chainwatch.cli.client_list:list_clients" if getattr(args, "list_clients", False) else _COMMANDS[command]
    module, function = target.split(":")
    handler: Callable[[argparse.Namespace], int] = getattr(importlib.import_module(module), function)
    return handler


def _say_error(text: str) -> None:
    """The one line a failed command prints. Under systemd its stderr is the
    journal, where "<3>" makes the line err (SyslogLevelPrefix=): a refused
    start shows under ``journalctl -u chainwatch -p err`` with its reason."""
    # Only a failing command needs the journal module (and its enums).
    from chainwatch.agent.journal import under_journald  # noqa: PLC0415

    # One line, whatever the file names or servers quoted in it hold.
    print(f"{'<3>' if under_journald(sys.stderr) else ''}chainwatch: {printable(text)}", file=sys.stderr)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit status."""
    words = sys.argv[1:] if argv is None else list(argv)
    parser = _parser(set(words) & _COMMANDS.keys())
    args, extra = parser.parse_known_args(words)
    if extra:
        # Said by the command's own parser: ``status`` exits 3 on a usage error.
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        commands.choices.get(args.command, parser).error(f"unrecognized arguments: {' '.join(extra)}")
    if args.command not in _COMMANDS:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        return _handler(args.command, args)(args)
    except ChainwatchError as error:
        _say_error(str(error))
        code: int = error.exit_code
        return code
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
        _say_error(
            f"internal error: {type(error).__name__}: {error} "
            "(run with CHAINWATCH_DEBUG=1 for a traceback, and please report it)"
        )
        return EXIT_SOFTWARE
