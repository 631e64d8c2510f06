"""The FastAPI application every service is built with.

The lifespan owns the engine and the background workers (outbox relay, consumers); health,
readiness and metrics endpoints and problem+json errors are the same everywhere.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from shared.audit import audit_router
from shared.db import make_engine, make_sessionmaker
from shared.errors import PROBLEM_MEDIA_TYPE, install_problem_handlers
from shared.observability import PERIODIC_LAST_SUCCESS, RequestContextMiddleware, configure_logging
from shared.params import storable_text
from shared.settings import ServiceSettings

log = structlog.get_logger(__name__)

Worker = Callable[[asyncio.Event], Awaitable[None]]


@dataclass
class Runtime:
    """What the lifespan builds and hands to the service's workers."""

    settings: ServiceSettings
    engine: AsyncEngine
    sessionmaker: async_sessionmaker[AsyncSession]
    stop: asyncio.Event = field(default_factory=asyncio.Event)


WorkerFactory = Callable[[Runtime], Sequence[Worker]]


def periodic(name: str, seconds: float, work: Callable[[], Awaitable[None]]) -> Worker:
    """A worker that runs `work` every `seconds` until stopped. A failed round (the database away,
    say) is logged and the next one runs on time: the worker never dies with it. Each completed
    round sets `periodic_last_success_timestamp_seconds{worker=name}`, so a worker gone quiet shows."""

    async def run(stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                await work()
            except Exception:
                log.exception("periodic_round_failed", worker=name)
            else:
                PERIODIC_LAST_SUCCESS.labels(name).set_to_current_time()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), seconds)

    return run


PROBLEM_RESPONSES: dict[int | str, dict[str, Any]] = {
    status: {"description": description, "content": {PROBLEM_MEDIA_TYPE: {}}}
    for status, description in {
        401: "Missing, expired or invalid bearer token",
        403: "The credential does not reach this resource",
        422: "Invalid request (problem+json listing each failing item)",
    }.items()
}


async def _broker_reachable(bootstrap: str) -> bool:
    host, _, port = bootstrap.split(",")[0].strip().rpartition(":")
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(host, int(port)), 1.0)
    except (OSError, TimeoutError, ValueError):
        return False
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()
    return True


def _ops_router() -> APIRouter:
    router = APIRouter(tags=["operations"])

    @router.get("/healthz", summary="Liveness: the process is up")
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @router.get(
        "/readyz",
        summary="Readiness: database and broker reachable",
        responses={503: {"description": "A dependency is unreachable"}},
    )
    async def readyz(request: Request) -> JSONResponse:
        runtime: Runtime = request.app.state.runtime
        checks: dict[str, str] = {}
        try:
            async with runtime.engine.connect() as conn:
                await asyncio.wait_for(conn.execute(text("SELECT 1")), 2.0)
            checks["database"] = "ok"
        except Exception as exc:
            checks["database"] = f"unreachable: {type(exc).__name__}"
        broker_ok = await _broker_reachable(runtime.settings.kafka_bootstrap_servers)
        checks["broker"] = "ok" if broker_ok else "unreachable"
        ready = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ready else "not ready", "checks": checks}, 200 if ready else 503)

    @router.get("/metrics", summary="Prometheus metrics", response_class=Response)
    async def metrics() -> Response:
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return router


# A consumer batch holds thousands of parsed events and result rows at once: with the default
# thresholds (700 new objects) the collector ran every few events and re-examined the service's
# whole start-up heap again and again (measured: a third of the thresholds consumer's CPU).
_YOUNG_GENERATION_THRESHOLD = 50_000


def tune_garbage_collector() -> None:
    """Keep the objects alive once the service has started (modules, the app, its schemas) out of
    every later collection, and collect young objects less often. Once per process."""
    if gc.get_threshold()[0] != _YOUNG_GENERATION_THRESHOLD:
        gc.collect()
        gc.freeze()
        gc.set_threshold(_YOUNG_GENERATION_THRESHOLD, 20, 20)


def create_app(
    *,
    settings: ServiceSettings,
    title: str,
    description: str,
    routers: Sequence[APIRouter],
    workers: WorkerFactory,
    record_reads: type,
    openapi_tags: list[dict[str, Any]] | None = None,
) -> FastAPI:
    """`record_reads`: the service's model of the record-reads log (shared.audit)."""
    configure_logging(settings.log_level, settings.log_json)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        engine = make_engine(settings.database_url, settings.database_pool_size)
        runtime = Runtime(settings=settings, engine=engine, sessionmaker=make_sessionmaker(engine))
        app.state.runtime = runtime
        app.state.sessionmaker = runtime.sessionmaker
        tune_garbage_collector()
        tasks = [asyncio.create_task(worker(runtime.stop)) for worker in workers(runtime)]
        log.info("service_started", service=settings.service_name, port=settings.port, workers=len(tasks))
        try:
            yield
        finally:
            runtime.stop.set()
            if tasks:
                _, pending = await asyncio.wait(tasks, timeout=10)
                for task in pending:
                    task.cancel()
                await asyncio.gather(*pending, return_exceptions=True)
            await engine.dispose()
            log.info("service_stopped", service=settings.service_name)

    app = FastAPI(
        title=title,
        description=description,
        version="1.0.0",
        lifespan=lifespan,
        openapi_tags=[
            *(openapi_tags or []),
            {"name": "audit", "description": "Who read which pupil's record"},
            {"name": "operations", "description": "Health, readiness, metrics"},
        ],
        responses=PROBLEM_RESPONSES,
        dependencies=[Depends(storable_text)],
    )
    app.state.settings = settings
    app.state.record_read_model = record_reads
    app.add_middleware(RequestContextMiddleware, service=settings.service_name)
    install_problem_handlers(app)
    app.include_router(_ops_router())
    for router in routers:
        app.include_router(router)
    app.include_router(audit_router())
    return app
