"""Admin actions (admin token): retry a file, requeue a dead-letter queue, trigger a rescan,
release the deletes a watcher held back.

They talk to the broker through :mod:`skynet.common.admin`; without ``SKYNET_AMQP_URL`` they
answer 503.
"""

from __future__ import annotations

from fastapi import APIRouter, Request

from skynet.api.errors import ApiError, responses
from skynet.api.models import (
    RequeueRequest,
    RequeueResult,
    RescanRequest,
    RescanResult,
    RetryRequest,
    RetryResult,
    SourceRequest,
)
from skynet.api.settings import ApiSettings
from skynet.common import admin


def _amqp(request: Request) -> str:
    settings: ApiSettings = request.app.state.settings
    if settings.amqp_url is None:
        raise ApiError(503, "no broker configured", "set SKYNET_AMQP_URL to enable admin actions")
    return settings.amqp_url.get_secret_value()


def admin_router() -> APIRouter:
    router = APIRouter(prefix="/v1/admin", tags=["admin"])
    errs = responses(400, 401, 403, 404, 422, 503)

    @router.post(
        "/retry", response_model=RetryResult, status_code=202, responses=errs, summary="Upload a file again, now"
    )
    def retry(request: Request, body: RetryRequest) -> RetryResult:
        return RetryResult(action_id=admin.retry_path(_amqp(request), body.source, body.path))

    @router.post(
        "/requeue-dead",
        response_model=RequeueResult,
        responses=errs,
        summary="Move a source's dead-letter messages back to work",
    )
    def requeue_dead(request: Request, body: RequeueRequest) -> RequeueResult:
        return RequeueResult(moved=admin.requeue_dead(_amqp(request), body.source, body.limit))

    @router.post(
        "/rescan", response_model=RescanResult, status_code=202, responses=errs, summary="Ask a watcher to rescan"
    )
    def rescan(request: Request, body: RescanRequest) -> RescanResult:
        admin.request_rescan(_amqp(request), body.source, full=body.full)
        return RescanResult()

    @router.post(
        "/release-held",
        response_model=RescanResult,
        status_code=202,
        responses=errs,
        summary="Apply the deletes a watcher's safety rules held back",
    )
    def release_held(request: Request, body: SourceRequest) -> RescanResult:
        admin.release_held(_amqp(request), body.source)
        return RescanResult()

    return router
