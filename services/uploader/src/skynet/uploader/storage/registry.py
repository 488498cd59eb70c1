"""Finding a backend by the scheme of ``SKYNET_TARGET``.

Backends are registered in the ``skynet.backends`` entry-point group: the entry-point name is the
URL scheme and its value a factory ``(target: str, settings: BackendSettings) -> Backend``. skynet
ships ``s3``, ``sftp`` and ``file``; a third-party package adds another by declaring, in its own
``pyproject.toml``::

    [project.entry-points."skynet.backends"]
    azure = "skynet_azure:open_backend"
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from urllib.parse import urlsplit

from skynet.common.errors import ConfigError
from skynet.uploader.storage.base import Backend
from skynet.uploader.storage.config import BackendSettings

GROUP = "skynet.backends"

Factory = Callable[[str, BackendSettings], Backend]


def available_schemes() -> list[str]:
    return sorted(ep.name for ep in entry_points(group=GROUP))


def factory_for(target: str) -> Factory:
    scheme = urlsplit(target).scheme
    if not scheme:
        raise ConfigError(f"SKYNET_TARGET: {target!r} has no scheme; expected one of {available_schemes()}")
    matches = [ep for ep in entry_points(group=GROUP) if ep.name == scheme]
    if not matches:
        raise ConfigError(f"SKYNET_TARGET: no storage backend for scheme {scheme!r}; installed: {available_schemes()}")
    factory: Factory = matches[0].load()
    return factory


def open_backend(target: str, settings: BackendSettings) -> Backend:
    """Open a backend for ``target``; one per thread."""
    return factory_for(target)(target, settings)
