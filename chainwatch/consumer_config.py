"""The lines to paste into Dovecot's and Postfix's configuration."""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence
from pathlib import Path

__all__ = ["dovecot_snippet", "dovecot_version", "postfix_snippet"]


def dovecot_version() -> str | None:
    """``2.3`` or ``2.4`` from the installed ``dovecot --version``, if any."""
    if not shutil.which("dovecot"):
        return None
    try:
        output = subprocess.run(
            ["dovecot", "--version"], capture_output=True, text=True, timeout=10, check=False
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.match(r"(\d+\.\d+)", output.strip())
    return match.group(1) if match else None


def _paths(output_dir: Path, lineage: str) -> tuple[Path, Path, Path]:
    live = output_dir / "live" / lineage
    return live / "fullchain.pem", live / "privkey.pem", live / "key+fullchain.pem"


def dovecot_snippet(output_dir: Path, lineages: Sequence[tuple[str, Sequence[str]]], version: str | None) -> str:
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
    return "\n".join(lines) + "\n"


def postfix_snippet(output_dir: Path, lineages: Sequence[tuple[str, Sequence[str]]]) -> str:
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
            lines += [f"{name} {_paths(output_dir, lineage)[2]}" for name in names or [lineage]]
        lines += [
            "# postmap -F copies the files into the map, so it must run again after each renewal:",
            "# in chainwatch.toml, give this consumer",
            '#   reload_command = ["sh", "-c", "postmap -F hash:/etc/postfix/sni_maps && postfix reload"]',
        ]
    else:
        lines += ["# then: postfix reload (chainwatch reloads it after every renewal)"]
    return "\n".join(lines) + "\n"
