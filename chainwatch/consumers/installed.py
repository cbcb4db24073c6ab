"""Which version of a server this host has installed, asked of the server itself.

Apart from the snippets (``consumer_config``) so that the command line can
name the servers without loading subprocess.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess

__all__ = ["dovecot_version", "installed_version"]

# How each server tells its version: the command (any of the names), and the
# text before "X.Y" in what it prints (some print it on stderr).
_VERSION_OF = {
    "dovecot": (("dovecot",), ("--version",), ""),
    "exim4": (("exim4", "exim"), ("-bV",), "Exim version "),
    "nginx": (("nginx",), ("-v",), "nginx/"),
    "apache2": (("apache2", "httpd"), ("-v",), "Apache/"),
    "haproxy": (("haproxy",), ("-v",), "HAProxy version "),
}
# Servers live in sbin, which a non-login root shell may lack.
_SEARCH = ":/usr/local/sbin:/usr/sbin:/sbin"


def installed_version(server: str) -> str | None:
    """``X.Y`` of the installed ``server`` (X.Y.Z for Apache), if it can be told."""
    if server not in _VERSION_OF:
        return None
    names, arguments, prefix = _VERSION_OF[server]
    for name in names:
        binary = shutil.which(name, path=os.environ.get("PATH", "") + _SEARCH)
        if binary is None:
            continue
        try:
            done = subprocess.run([binary, *arguments], capture_output=True, text=True, timeout=10, check=False)
        except (OSError, subprocess.TimeoutExpired):
            return None
        digits = r"(\d+\.\d+\.\d+)" if server == "apache2" else r"(\d+\.\d+)"
        match = re.search(("^" if not prefix else re.escape(prefix)) + digits, done.stdout + done.stderr, re.M)
        return match.group(1) if match else None
    return None


def dovecot_version() -> str | None:
    """``2.3`` or ``2.4`` from the installed ``dovecot --version``, if any."""
    return installed_version("dovecot")
