"""skynet API: status, files, transfers, workers, failures, events and admin actions over HTTP.

Public surface: :func:`skynet.api.app.create_app` (the FastAPI application factory),
:class:`skynet.api.settings.ApiSettings`, :func:`skynet.api.main.main` (``skynet-api``) and
:func:`skynet.api.cli.main` (``skynet``).

Modules: ``settings``; ``db`` (the psycopg2 pool adapter); ``queries`` (every SQL statement);
``models`` (response and error models); ``auth``; ``errors`` (JSON error responses);
``metrics`` (Prometheus text); ``routes``, ``admin_routes``, ``stream`` (the endpoints);
``broker`` (cached queue depths); ``app``; ``main``; ``cli``.
"""
