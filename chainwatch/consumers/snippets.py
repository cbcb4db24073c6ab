"""The lines to paste into a server's configuration: Dovecot, Postfix, Exim, nginx, Apache, HAProxy.

Each points at the stable paths under the output directory (``live/NAME/``),
serves every lineage asked for (by SNI where the server can), and says how
chainwatch reloads it. Where the installed version changes what works, it is
detected and said (Dovecot 2.4's renamed settings, Apache before 2.4.8,
HAProxy before 2.1).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

__all__ = [
    "SERVERS",
    "apache2_snippet",
    "dovecot_snippet",
    "exim4_snippet",
    "haproxy_snippet",
    "nginx_snippet",
    "postfix_snippet",
]

Lineages = Sequence[tuple[str, Sequence[str]]]
"""Each lineage with its DNS names (for SNI)."""

SERVERS = ("dovecot", "postfix", "exim4", "nginx", "apache2", "haproxy")


def _at_least(version: str | None, wanted: tuple[int, ...]) -> bool:
    """Whether ``version`` is ``wanted`` or later; an unknown version counts as new enough."""
    if version is None:
        return True
    return tuple(int(part) for part in version.split(".")) >= wanted


def _detected(server: str, version: str | None, assumed: str) -> str:
    return f"{server} {version} detected" if version else f"{server} version not detected; {assumed}"


def _consumer(name: str, reload: str, probe: str) -> list[str]:
    """The chainwatch.toml table that reloads and probes this server, commented: it goes in another file."""
    table = ["[[consumer]]", f'name = "{name}"', reload, f'probe = ["{probe}"]']
    return ["# and in /etc/chainwatch/chainwatch.toml:", *(f"#   {line}" for line in table)]


# Where the printed [[consumer]] probes: the agent asks loopback with each
# lineage's names as SNI. A public name would leave the host, and the unit's
# IPAddressAllow=localhost refuses that (the probe is never answered); the
# lineage's own name is no host at all (``lego:mail.example.org`` reads as
# host ``lego``, port ``mail.example.org``).
_LOOPBACK = "127.0.0.1"


def _paths(output_dir: Path, lineage: str) -> tuple[Path, Path, Path]:
    live = output_dir / "live" / lineage
    return live / "fullchain.pem", live / "privkey.pem", live / "key+fullchain.pem"


def dovecot_snippet(output_dir: Path, lineages: Lineages, version: str | None) -> str:
    """Dovecot settings; ``lineages`` pairs each lineage with its DNS names (for SNI)."""
    new_style = version is not None and tuple(int(p) for p in version.split(".")) >= (2, 4)
    detected = f"Dovecot {version} detected" if version else "Dovecot version not detected; assuming 2.3 (Debian 12)"
    # Only the file paths: whether TLS is required is the admin's choice
    # (Debian ships ssl = yes), not something a certificate tool should change.
    lines = [f"# /etc/dovecot/conf.d/10-ssl.conf ({detected}): replace the certificate and key lines"]

    def pair(lineage: str, indent: str) -> list[str]:
        cert, key, _ = _paths(output_dir, lineage)
        if new_style:
            return [f"{indent}ssl_server_cert_file = {cert}", f"{indent}ssl_server_key_file = {key}"]
        return [f"{indent}ssl_cert = <{cert}", f"{indent}ssl_key = <{key}"]

    first, *others = lineages
    lines += pair(first[0], "")
    for lineage, names in others:
        for name in names or [lineage]:
            lines += [f"local_name {name} {{", *pair(lineage, "  "), "}"]
    if new_style:
        lines.insert(1, "# dovecot.conf must begin with: dovecot_config_version = 2.4.0")
    lines += ["# then: systemctl reload dovecot (chainwatch reloads it after every renewal)"]
    lines += _consumer("dovecot", 'unit = "dovecot.service"', f"imaps://{_LOOPBACK}:993")
    return "\n".join(lines) + "\n"


def postfix_snippet(output_dir: Path, lineages: Lineages) -> str:
    """Postfix (3.4+) settings: key and chain from one file, SNI map for more lineages."""
    first, *others = lineages
    lines = [
        "# /etc/postfix/main.cf (Postfix 3.4 or later)",
        f"smtpd_tls_chain_files = {_paths(output_dir, first[0])[2]}",
    ]
    if others:
        lines += [
            "tls_server_sni_maps = hash:/etc/postfix/sni_maps",
            "",
            "# /etc/postfix/sni_maps; then: postmap -F hash:/etc/postfix/sni_maps",
        ]
        for lineage, names in others:
            # Postfix looks up the SNI name, then its parent domains with a
            # leading dot: ".example.org" is its key for "*.example.org".
            keys = [name.removeprefix("*") for name in names or [lineage]]
            lines += [f"{key} {_paths(output_dir, lineage)[2]}" for key in keys]
        lines += ["# postmap -F copies the files into the map, so it must run again after each renewal:"]
        reload = 'reload_command = ["sh", "-c", "postmap -F hash:/etc/postfix/sni_maps && postfix reload"]'
    else:
        lines += ["# then: postfix reload (chainwatch reloads it after every renewal)"]
        reload = 'unit = "postfix.service"'
    lines += _consumer("postfix", reload, f"smtp+starttls://{_LOOPBACK}:25")
    return "\n".join(lines) + "\n"


def _exim_paths(output_dir: Path, lineage: str) -> tuple[str, ...]:
    """The published paths as Exim must be given them: tls_certificate and tls_privatekey
    are colon-separated lists, so the colon of a ``PREFIX:NAME`` lineage is doubled."""
    return tuple(str(path).replace(":", "::") for path in _paths(output_dir, lineage))


def exim4_snippet(output_dir: Path, lineages: Lineages, version: str | None) -> str:
    """Debian's Exim macros (split or unsplit configuration); more lineages by SNI.

    Exim opens the key in the process that serves the connection, which runs
    as Debian-exim: the published key must be readable by that group.
    """
    first, *others = lineages
    cert, key, _ = _exim_paths(output_dir, first[0])
    cert_value, key_value = cert, key
    # Innermost the first lineage, the one served without SNI (or for an unknown name).
    for lineage, names in reversed(others):
        other_cert, other_key, _ = _exim_paths(output_dir, lineage)
        listed = ":".join(names or [lineage])
        # A domain list, not a string list (inlisti): *.example.org in the
        # certificate must match imap.example.org, caselessly, as in a client.
        cert_value = f"${{if match_domain{{$tls_in_sni}}{{{listed}}}{{{other_cert}}}{{{cert_value}}}}}"
        key_value = f"${{if match_domain{{$tls_in_sni}}{{{listed}}}{{{other_key}}}{{{key_value}}}}}"
    lines = [
        f"# /etc/exim4/exim4.conf.localmacros ({_detected('Exim', version, 'Debian 12 has 4.96')})",
        "# with dc_use_split_config='true' the same lines go in /etc/exim4/conf.d/main/000_localmacros",
        "MAIN_TLS_ENABLE = yes",
        f"MAIN_TLS_CERTIFICATE = {cert_value}",
        f"MAIN_TLS_PRIVATEKEY = {key_value}",
        "# Exim reads the key as Debian-exim: publish it 0640 root:Debian-exim with",
        '#   [output] key_group = "Debian-exim"   in /etc/chainwatch/chainwatch.toml',
        "# then: update-exim4.conf && systemctl reload exim4 (chainwatch reloads it after every renewal)",
    ]
    lines += _consumer("exim4", 'unit = "exim4.service"', f"smtp+starttls://{_LOOPBACK}:25")
    return "\n".join(lines) + "\n"


def nginx_snippet(output_dir: Path, lineages: Lineages, version: str | None) -> str:
    """One TLS server block per lineage, chosen by server_name (SNI)."""
    lines = [f"# /etc/nginx/sites-available/default ({_detected('nginx', version, 'any 1.x works')})"]
    for lineage, names in lineages:
        cert, key, _ = _paths(output_dir, lineage)
        lines += [
            "server {",
            "    listen 443 ssl;",
            f"    server_name {' '.join(names or [lineage])};",
            f"    ssl_certificate {cert};",
            f"    ssl_certificate_key {key};",
            "}",
        ]
    lines += ["# then: systemctl reload nginx (chainwatch reloads it after every renewal)"]
    lines += _consumer("nginx", 'unit = "nginx.service"', f"https://{_LOOPBACK}:443")
    return "\n".join(lines) + "\n"


def apache2_snippet(output_dir: Path, lineages: Lineages, version: str | None) -> str:
    """One virtual host per lineage; before 2.4.8 the chain needs its own directive."""
    chain_in_certificate = _at_least(version, (2, 4, 8))
    detected = _detected("Apache", version, "assuming 2.4.8 or later")
    lines = [f"# /etc/apache2/sites-available/default-ssl.conf ({detected}); a2enmod ssl"]
    for lineage, names in lineages:
        live = output_dir / "live" / lineage
        first_name, *aliases = names or [lineage]
        lines += ["<VirtualHost *:443>", f"    ServerName {first_name}"]
        lines += [f"    ServerAlias {' '.join(aliases)}"] if aliases else []
        lines += ["    SSLEngine on"]
        if chain_in_certificate:
            lines += [f"    SSLCertificateFile {live / 'fullchain.pem'}"]
        else:
            lines += [
                f"    SSLCertificateFile {live / 'cert.pem'}",
                f"    SSLCertificateChainFile {live / 'chain.pem'}",
            ]
        lines += [f"    SSLCertificateKeyFile {live / 'privkey.pem'}", "</VirtualHost>"]
    lines += ["# then: systemctl reload apache2 (chainwatch reloads it after every renewal)"]
    lines += _consumer("apache2", 'unit = "apache2.service"', f"https://{_LOOPBACK}:443")
    return "\n".join(lines) + "\n"


def haproxy_snippet(output_dir: Path, lineages: Lineages, version: str | None) -> str:
    """One ``crt`` per lineage (key and full chain in one file); HAProxy chooses by SNI.

    From 2.1 on, the runtime API takes new certificates without a reload.
    """
    runtime_api = _at_least(version, (2, 1))
    files = " ".join(f"crt {_paths(output_dir, lineage)[2]}" for lineage, _ in lineages)
    lines = [
        f"# /etc/haproxy/haproxy.cfg ({_detected('HAProxy', version, 'Debian 12 has 2.6')})",
        "frontend https",
        f"    bind :443 ssl {files}",
    ]
    probe = f"https://{_LOOPBACK}:443"
    if runtime_api:
        lines += [
            "# chainwatch puts renewed certificates in through the runtime API, without a reload:",
            "# every connection stays open. It needs, in the global section (Debian's haproxy.cfg has it):",
            "#     stats socket /run/haproxy/admin.sock mode 660 level admin",
            '# or else reload through systemd: unit = "haproxy.service" instead of haproxy_socket below',
        ]
        lines += _consumer("haproxy", 'haproxy_socket = "/run/haproxy/admin.sock"', probe)
    else:
        lines += ["# then: systemctl reload haproxy (chainwatch reloads it after every renewal)"]
        lines += _consumer("haproxy", 'unit = "haproxy.service"', probe)
    return "\n".join(lines) + "\n"
