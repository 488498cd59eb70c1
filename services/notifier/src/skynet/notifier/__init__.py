"""skynet notifier: persists every lifecycle event in Postgres.

Public surface: :func:`skynet.notifier.main.main` (the ``skynet-notifier`` console script),
:class:`skynet.notifier.settings.NotifierSettings`, and :func:`skynet.notifier.schema.migrate`
(applies the versioned SQL migrations shipped in ``skynet/notifier/migrations``).

Modules: ``rows`` (pure: events → table rows), ``store`` (the Postgres adapter), ``consumer``
(the batching RabbitMQ loop), ``schema`` (migrations), ``main`` (wiring and signals).
"""
