"""Layer 3, where lineages come from: certbot's live and archive trees, the other ACME clients, named pairs.

Produces "lineage N as it is now" (parsed certificates, the key's public
half, the files' digests) or "N is mid-update, look again"; it decides
nothing and writes nothing. May import :mod:`chainwatch.x509`,
:mod:`chainwatch.files` and the shared top-level modules.
"""
