"""Load a set as the consumers' TLS library does, before it is served.

Dovecot, Postfix, nginx, Exim and HAProxy load the published files with
OpenSSL, and whatever chainwatch's own readers concluded, a set OpenSSL
refuses would take them down at their next reload. So no set becomes
live until Python's ``ssl`` (OpenSSL) has loaded it as a server does, both
ways it is offered: fullchain.pem with privkey.pem, and key+fullchain.pem
alone (Postfix's ``smtpd_tls_chain_files``, HAProxy's ``crt``).
"""

from __future__ import annotations

import re
import ssl
from pathlib import Path

from chainwatch.errors import InputError

__all__ = ["Unloadable", "refusal"]

# CPython appends where in _ssl.c it raised; OpenSSL's words are before it.
_WHERE = re.compile(r"\s*\(_ssl\.c:\d+\)$")


class Unloadable(InputError):
    """A set OpenSSL refuses to load; the message is OpenSSL's reason."""


def refusal(folder: Path) -> str | None:
    """Why OpenSSL will not load the set in ``folder`` as a server's certificate and key, or None.

    An ``OSError`` (a file that cannot be read) is the caller's: it says
    nothing about the set.
    """
    pairs = (("fullchain.pem", "privkey.pem"), ("key+fullchain.pem", None))
    for chain, key in pairs:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        try:
            context.load_cert_chain(folder / chain, folder / key if key else None)
        except ssl.SSLError as error:
            what = f"{chain} with {key}" if key else f"{chain} alone"
            return f"OpenSSL refuses to load {what}: {_WHERE.sub('', str(error))}"
    return None
