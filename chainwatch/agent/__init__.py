"""Layer 6, the long-running agent: a lineage's lifecycle and the pass that applies it.

:mod:`~chainwatch.agent.reconcile` observes a lineage, asks the policy and
the lifecycle what to do, and has :mod:`~chainwatch.agent.publish` write it
atomically; :mod:`~chainwatch.agent.consumer_step` reloads and probes the
consumers; :mod:`~chainwatch.agent.loop` waits on inotify
(:mod:`~chainwatch.agent.watch`), signals and timers, and tells systemd
(:mod:`~chainwatch.agent.notify`), the journal (:mod:`~chainwatch.agent.journal`)
and Prometheus (:mod:`~chainwatch.agent.metrics`). May import every earlier layer;
nothing imports it but :mod:`chainwatch.cli`'s ``run``, ``sync``, ``probe`` and
``check-config``.
"""
