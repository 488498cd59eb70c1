"""Bearer-token auth: a read token and an admin token, compared in constant time.

No token, or one that matches neither, is 401 with ``WWW-Authenticate``; a read token on an
admin action is 403. The event stream also takes ``?token=`` because a browser's EventSource
cannot send headers; the query string is never logged (see ``app.access_log``).
"""

from __future__ import annotations

import hmac
from typing import Annotated, Literal

from fastapi import Depends, Request
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer

from skynet.api.errors import WWW_AUTHENTICATE, ApiError

Role = Literal["read", "admin"]

bearer = HTTPBearer(auto_error=False, description="SKYNET_API_TOKEN (read) or SKYNET_API_ADMIN_TOKEN (admin)")
query_token = APIKeyQuery(name="token", auto_error=False, description="the token, for EventSource clients only")


class Authenticator:
    def __init__(self, read_token: str | None, admin_token: str | None) -> None:
        self._read = read_token.encode() if read_token else None
        self._admin = admin_token.encode() if admin_token else None

    def role(self, token: str | None) -> Role | None:
        """Which role ``token`` grants; both comparisons always run, in constant time."""
        if not token:
            return None
        given = token.encode("utf-8", "surrogateescape")
        is_admin = self._admin is not None and hmac.compare_digest(given, self._admin)
        is_read = self._read is not None and hmac.compare_digest(given, self._read)
        if is_admin:
            return "admin"
        return "read" if is_read else None


def _authenticator(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.auth
    return auth


def _unauthorized() -> ApiError:
    return ApiError(401, "missing or invalid token", "send Authorization: Bearer <token>", WWW_AUTHENTICATE)


def require_read(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Role:
    role = _authenticator(request).role(creds.credentials if creds else None)
    if role is None:
        raise _unauthorized()
    return role


def require_admin(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Role:
    role = _authenticator(request).role(creds.credentials if creds else None)
    if role is None:
        raise _unauthorized()
    if role != "admin":
        raise ApiError(403, "this action needs the admin token")
    return role


def require_read_or_query(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    token: Annotated[str | None, Depends(query_token)],
) -> Role:
    role = _authenticator(request).role(creds.credentials if creds else token)
    if role is None:
        raise _unauthorized()
    return role


# The same checks as ``async`` dependencies: they do no I/O, so running them on the event loop
# saves each request a hop to the threadpool.


async def read_access(request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]) -> Role:
    return require_read(request, creds)


async def admin_access(
    request: Request, creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)]
) -> Role:
    return require_admin(request, creds)


async def stream_access(
    request: Request,
    creds: Annotated[HTTPAuthorizationCredentials | None, Depends(bearer)],
    token: Annotated[str | None, Depends(query_token)],
) -> Role:
    return require_read_or_query(request, creds, token)
