"""Structured JSON logs with request and event ids, and Prometheus metrics.

Logs carry identifiers (URN, event id, request id), never children's names or free text.
"""

from __future__ import annotations

import logging
import sys
import time
import uuid

import structlog
from prometheus_client import Counter, Gauge, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

REQUESTS = Counter("http_requests_total", "HTTP requests handled", ["service", "method", "route", "status"])
REQUEST_SECONDS = Histogram(
    "http_request_duration_seconds",
    "HTTP request latency",
    ["service", "method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)
OUTBOX_BACKLOG = Gauge("outbox_backlog_messages", "Events written but not yet published", ["service"])
OUTBOX_PUBLISHED = Counter("outbox_published_total", "Events published by the outbox relay", ["service", "topic"])
OUTBOX_FAILURES = Counter("outbox_publish_failures_total", "Failed publish attempts", ["service"])
CONSUMER_LAG = Gauge("consumer_lag_messages", "Messages behind the partition end", ["consumer", "topic", "partition"])
CONSUMED = Counter("consumer_events_total", "Events consumed", ["consumer", "topic", "outcome"])
PERIODIC_LAST_SUCCESS = Gauge(
    "periodic_last_success_timestamp_seconds", "When a periodic worker last completed a round (Unix time)", ["worker"]
)


def configure_logging(level: str = "INFO", json: bool = True) -> None:
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]
    renderer = structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    structlog.configure(
        processors=[*processors, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        # No file given: each line goes to sys.stdout as it is when written, so output redirected
        # after start-up (a supervisor, a test capturing it) still receives every log line.
        logger_factory=structlog.PrintLoggerFactory(),
        cache_logger_on_first_use=True,
    )
    # Libraries log through the standard library; keep them quiet unless something is wrong.
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="%(levelname)s %(name)s %(message)s")


class RequestContextMiddleware:
    """Gives every request an id (or keeps the caller's X-Request-ID), logs it and counts it."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.service = service
        self.log = structlog.get_logger("http")

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        request_id = headers.get(b"x-request-id", b"").decode("latin-1")[:64] or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        status_holder = {"status": 500}

        async def send_wrapper(message: Message) -> None:
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                message.setdefault("headers", []).append((b"x-request-id", request_id.encode()))
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            route = scope.get("route")
            route_path = getattr(route, "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            method = scope["method"]
            REQUESTS.labels(self.service, method, route_path, str(status_holder["status"])).inc()
            REQUEST_SECONDS.labels(self.service, method, route_path).observe(elapsed)
            if route_path not in ("/healthz", "/readyz", "/metrics"):
                self.log.info(
                    "request",
                    method=method,
                    route=route_path,
                    status=status_holder["status"],
                    ms=round(elapsed * 1000, 1),
                )
            structlog.contextvars.unbind_contextvars("request_id")
