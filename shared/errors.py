"""RFC 9457 problem details: every error a client sees is `application/problem+json`.

Errors carry their HTTP status; services raise `Problem` (or a subclass) and never build
responses by hand. Request validation errors list every failing item with its location.
"""

from __future__ import annotations

from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

from shared.db import is_transient

PROBLEM_MEDIA_TYPE = "application/problem+json"
PROBLEM_BASE = "/problems/"

log = structlog.get_logger(__name__)


class Problem(Exception):
    """An error with an HTTP status, a stable `type` slug and a human detail."""

    headers: dict[str, str] = {}  # response headers the status calls for (e.g. Retry-After)

    def __init__(
        self,
        status: int,
        slug: str,
        title: str,
        detail: str | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title)
        self.status = status
        self.slug = slug
        self.title = title
        self.detail = detail
        self.extensions = extensions

    def body(self, instance: str | None = None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "type": PROBLEM_BASE + self.slug,
            "title": self.title,
            "status": self.status,
        }
        if self.detail:
            body["detail"] = self.detail
        if instance:
            body["instance"] = instance
        body.update(self.extensions)
        return body


class NotFound(Problem):
    def __init__(self, what: str, detail: str) -> None:
        super().__init__(404, f"{what}-not-found", f"{what.replace('-', ' ').capitalize()} not found", detail)


class Conflict(Problem):
    def __init__(self, slug: str, detail: str, **extensions: Any) -> None:
        super().__init__(409, slug, slug.replace("-", " ").capitalize(), detail, **extensions)


class Unprocessable(Problem):
    def __init__(self, slug: str, detail: str, **extensions: Any) -> None:
        super().__init__(422, slug, slug.replace("-", " ").capitalize(), detail, **extensions)


class TooManyRequests(Problem):
    def __init__(self, detail: str, retry_after: int) -> None:
        super().__init__(429, "too-many-requests", "Too many requests", detail, retry_after=retry_after)
        self.headers = {"Retry-After": str(retry_after)}


def problem_response(problem: Problem, request: Request, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        problem.body(instance=request.url.path),
        status_code=problem.status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=headers,
    )


def _location(loc: tuple[Any, ...]) -> str:
    # Body errors are located within the body ("marks.3.upn"), as the services' own checks are;
    # query, path and header errors keep their prefix ("query.since").
    if loc and loc[0] == "body":
        loc = loc[1:]
    return ".".join(str(part) for part in loc) or "body"


def validation_errors(errors: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Pydantic errors as `{location, message, type}` items a client can map back to its payload."""
    items = []
    for err in errors:
        message = err.get("msg", "invalid")
        ctx = err.get("ctx") or {}
        if "error" in ctx and isinstance(ctx["error"], Exception):
            message = str(ctx["error"])
        items.append({"location": _location(tuple(err.get("loc", ()))), "message": message, "type": err.get("type")})
    return items


_STATUS_SLUGS = {
    400: "bad-request",
    401: "unauthenticated",
    403: "forbidden",
    404: "not-found",
    405: "method-not-allowed",
    406: "not-acceptable",
    409: "conflict",
    413: "payload-too-large",
    415: "unsupported-media-type",
    429: "too-many-requests",
}


_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def _allowed_methods(request: Request) -> str:
    """Every method the request's path answers to. Starlette's 405 names only the methods of the
    first route whose path matched (`Allow: GET` for a path that also takes PUT)."""
    routes = request.app.router.routes
    allowed = [
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    ]
    return ", ".join(allowed)


def install_problem_handlers(app: FastAPI) -> None:
    @app.exception_handler(Problem)
    async def _problem(request: Request, exc: Problem) -> JSONResponse:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else {}
        return problem_response(exc, request, {**headers, **exc.headers})

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = validation_errors(list(exc.errors()))
        body_error = any(e["type"] == "json_invalid" for e in errors)
        problem = Problem(
            400 if body_error else 422,
            "malformed-json" if body_error else "invalid-request",
            "Malformed JSON body" if body_error else "Invalid request",
            f"{len(errors)} item(s) failed validation",
            errors=errors,
        )
        return problem_response(problem, request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        slug = _STATUS_SLUGS.get(exc.status_code, "http-error")
        problem = Problem(exc.status_code, slug, slug.replace("-", " ").capitalize(), str(exc.detail))
        headers = getattr(exc, "headers", None)
        if exc.status_code == 405:
            headers = {**(headers or {}), "Allow": _allowed_methods(request)}
        return problem_response(problem, request, headers)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # The route template, not the path: paths carry UPNs.
        route = getattr(request.scope.get("route"), "path", "unmatched")
        if is_transient(exc):
            # The database is restarting or out of reach: the client should retry, not report a bug.
            log.warning("dependency_unavailable", method=request.method, route=route, error=type(exc).__name__)
            problem = Problem(
                503,
                "service-unavailable",
                "Service unavailable",
                "The database is briefly unreachable; retry the request (with the same Idempotency-Key, if it "
                "had one).",
            )
            return problem_response(problem, request, {"Retry-After": "1"})
        log.exception("unhandled_error", method=request.method, route=route)
        problem = Problem(500, "internal-error", "Internal error", "The error was logged; nothing was stored.")
        return problem_response(problem, request)
