"""Layer 2, the decision: which certificates a server should send, and why.

:mod:`~chainwatch.policy.trim` holds :func:`~chainwatch.policy.trim.decide`,
a pure function of (certificates, trust stores, time, settings); the other
modules are its steps, its settings and its renderings for people
(:mod:`~chainwatch.policy.explain`) and machines (:mod:`~chainwatch.policy.report`).
No module here reads a clock, a file or the network: callers pass the time
and the parsed certificates. May import :mod:`chainwatch.x509` and the shared
top-level modules, nothing later.
"""
