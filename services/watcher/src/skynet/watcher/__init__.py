"""skynet watcher: turns changes in one folder into deduplicated, broker-confirmed actions.

Entry point: ``skynet-watcher`` (``skynet.watcher.main:main``). Modules: ``settings``,
``filters`` (ignores), ``coalescer`` (pure burst coalescing), ``scanner`` (tree walk),
``store`` (SQLite outbox + index), ``engine`` (the stability gate), ``pump`` (outbox → broker),
``observer`` (watchdog), ``control`` (admin requests).
"""
