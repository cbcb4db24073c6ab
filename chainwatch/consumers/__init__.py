"""Layer 5, the servers that use a published set: reloading them, asking what they serve, detecting them.

Reload through systemd's D-Bus API or a command, HAProxy's runtime API,
probing a server the way a mail client does (STARTTLS included), which
server version is installed, and the configuration lines to paste into each.
It acts on one server when asked and returns what it saw; it decides
nothing about lineages. May import :mod:`chainwatch.x509`,
:mod:`chainwatch.files` and the shared top-level modules.
"""
