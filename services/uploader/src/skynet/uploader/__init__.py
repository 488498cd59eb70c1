"""skynet uploader: consumes actions and reconciles a remote (S3, SFTP, a folder) with the local folder.

Entry point: ``skynet-uploader`` (``skynet.uploader.main:main``). Modules: ``settings``,
``reconcile`` (pure decisions), ``localfs`` (the read-only local view), ``worker`` (one action),
``storage`` (backends behind one interface, found by URL scheme).
"""
