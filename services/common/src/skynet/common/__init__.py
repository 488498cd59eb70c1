"""skynet's shared library: message schema, settings, broker topology and adapter, errors, logging.

No service logic lives here. Import from the submodules: ``skynet.common.messages``,
``skynet.common.settings``, ``skynet.common.topology``, ``skynet.common.broker``,
``skynet.common.errors``, ``skynet.common.paths``, ``skynet.common.logs``.
"""
