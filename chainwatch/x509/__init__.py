"""Layer 1, reading certificates: DER, PEM, parsed certificates, signatures, private keys, trust stores.

Turns bytes into facts (who issued whom, which key, which dates) and says
nothing about what to serve. It may import only :mod:`chainwatch.errors`,
:mod:`chainwatch.printable` and :mod:`chainwatch.files`; it reads a file only
when handed its path, never a clock, never the network.
"""
