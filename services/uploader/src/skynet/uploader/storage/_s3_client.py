"""The boto3 S3 client skynet uses, and three per-request costs of botocore's it removes.

* ``Expect: 100-continue`` on small bodies (:func:`_send_small_bodies_at_once`).
* Endpoint resolution per key (:func:`_resolve_endpoints_once`).
* The User-Agent string, built twice per request (:func:`_build_user_agent_once`).

Each is measured in bench/NOTES.md.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import boto3
from botocore.config import Config
from botocore.utils import determine_content_length

from skynet.uploader.storage.config import BackendSettings

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

EXPECT_CONTINUE_MIN_BYTES = 2 * 1024 * 1024  # the AWS SDK for Go's rule


def _send_small_bodies_at_once(params: dict[str, Any], **_: Any) -> None:
    """Drop ``Expect: 100-continue`` from a request whose body is under 2 MiB.

    botocore asks every PUT and part upload to wait for the server's "100 Continue" before
    sending the body: one more round trip each. That spares sending a large body the server
    would refuse anyway; for a small file it only doubles the time to a far-away store (on a
    20 ms link, 40 ms instead of 20 per file). Bodies of 2 MiB or more keep it, as the AWS SDK
    for Go does.
    """
    headers = params.get("headers")
    if headers and headers.get("Expect") == "100-continue":
        length = determine_content_length(params.get("body"))
        if length is not None and length < EXPECT_CONTINUE_MIN_BYTES:
            del headers["Expect"]


_TEMPLATE_REF = re.compile(r"\{([A-Za-z0-9_]+)[}#]")


def _refs(node: object, into: set[str]) -> set[str]:
    """Every parameter a rule set reads: ``{"ref": name}`` and ``{name}`` in templates."""
    if isinstance(node, dict):
        ref = node.get("ref")
        if isinstance(ref, str):
            into.add(ref)
        for value in node.values():
            _refs(value, into)
    elif isinstance(node, list):
        for value in node:
            _refs(value, into)
    elif isinstance(node, str) and "{" in node:
        into.update(_TEMPLATE_REF.findall(node))
    return into


def unread_parameters(ruleset: dict[str, Any]) -> frozenset[str]:
    """The rule set's parameters that none of its rules reads (for S3: Key, Prefix, CopySource)."""
    return frozenset(ruleset.get("parameters", {})) - _refs(ruleset.get("rules", []), set())


def _resolve_endpoints_once(client: S3Client, session: boto3.session.Session) -> None:
    """Let botocore's endpoint cache work across keys.

    botocore evaluates S3's endpoint rule set before every request, behind a cache keyed on the
    parameters, and the object key is one of them although no rule reads it: every new key
    missed the cache, and evaluating the rules was a tenth of the uploader's CPU per small file
    (about 270 µs a call against 40 from the cache, measured). Parameters no rule reads cannot
    change the endpoint, so they are left out of the lookup. Worked out from the rule set the
    client itself loaded; if botocore's internals ever differ, the client is left as it is.
    """
    try:
        resolver = client._ruleset_resolver  # type: ignore[attr-defined]
        params_of: Callable[..., dict[str, Any]] = resolver._get_provider_params
        loader = session._session.get_component("data_loader")
        unread = unread_parameters(loader.load_service_model("s3", "endpoint-rule-set-1"))
    except Exception as exc:  # an internal botocore changed: keep its default behaviour
        log.debug("S3 endpoint resolution left uncached: %s: %s", type(exc).__name__, exc)
        return
    if not unread:
        return

    def read_parameters(*args: Any, **kwargs: Any) -> dict[str, Any]:
        params = params_of(*args, **kwargs)
        for name in unread:
            params.pop(name, None)
        return params

    resolver._get_provider_params = read_parameters


USER_AGENT_VARIANTS = 64  # distinct feature sets remembered; a handful occur in practice


def _build_user_agent_once(client: S3Client) -> None:
    """Build each distinct User-Agent string once instead of twice per request.

    botocore assembles the header from a dozen components (SDK, OS, language, config, the
    features the request used…), sanitising each, when it serialises a request and again just
    before sending it: together about 7 % of the uploader's CPU per small PUT (py-spy). The
    string only changes with the set of features, so it is kept per set. If botocore's internals
    ever differ, the client is left as it is.
    """
    try:
        from botocore.context import get_context

        creator = client._user_agent_creator  # type: ignore[attr-defined]
        build: Callable[[], str] = creator.to_string
        creator._client_features  # noqa: B018 (checks the attribute exists)
    except Exception as exc:  # an internal botocore changed: keep its default behaviour
        log.debug("S3 User-Agent left uncached: %s: %s", type(exc).__name__, exc)
        return
    built: dict[tuple[frozenset[str], frozenset[str]], str] = {}

    def to_string() -> str:
        ctx = get_context()
        key = (frozenset(ctx.features) if ctx is not None else frozenset(), frozenset(creator._client_features or ()))
        ua = built.get(key)
        if ua is None:
            if len(built) >= USER_AGENT_VARIANTS:
                built.clear()
            ua = built[key] = build()
        return ua

    creator.to_string = to_string


def make_client(settings: BackendSettings) -> S3Client:
    config = Config(
        retries={"mode": "standard", "max_attempts": 3},
        max_pool_connections=max(10, 2 * settings.s3_part_concurrency),
        connect_timeout=10,
        read_timeout=120,
        # S3-compatible stores do not all understand the newer default CRC trailers; we send
        # each body's checksum ourselves, as a header (see _s3_multipart).
        request_checksum_calculation="when_required",
        response_checksum_validation="when_required",
        # Every request's parameters are built here, never taken from a user: botocore checking
        # them against the model again cost about a tenth of the client's CPU per small PUT.
        parameter_validation=False,
        s3={"addressing_style": "path"} if settings.s3_endpoint_url else None,
    )
    verify: bool | str = settings.s3_ca_bundle if settings.s3_ca_bundle else settings.s3_verify
    session = boto3.session.Session()
    client = session.client(
        "s3",
        endpoint_url=settings.s3_endpoint_url or None,
        region_name=settings.s3_region or None,
        verify=verify,
        config=config,
    )
    client.meta.events.register_last("before-call.s3", _send_small_bodies_at_once)
    _resolve_endpoints_once(client, session)
    _build_user_agent_once(client)
    return client
