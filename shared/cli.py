"""`attendance`: the ops CLI. Runs the platform, serves one service, migrates, and manages
schools, API clients and dev tokens.

Commands that touch data act on the platform `make run` started: they read its connection
details from `<data dir>/platform.env` (environment variables win), so no flags are needed.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer

from shared.settings import REPO_ROOT, data_dir, platform_env_file

app = typer.Typer(help=__doc__, no_args_is_help=True, pretty_exceptions_enable=False)
school_app = typer.Typer(help="The registry of schools.", no_args_is_help=True)
client_app = typer.Typer(help="API clients (machine credentials).", no_args_is_help=True)
registers_app = typer.Typer(help="Register maintenance.", no_args_is_help=True)
app.add_typer(school_app, name="school")
app.add_typer(client_app, name="client")
thresholds_app = typer.Typer(help="Running attendance and alerts.", no_args_is_help=True)
casework_app = typer.Typer(help="The casework workflow.", no_args_is_help=True)
app.add_typer(registers_app, name="registers")
app.add_typer(thresholds_app, name="thresholds")
app.add_typer(casework_app, name="casework")
notifications_app = typer.Typer(help="Event documentation and delivery.", no_args_is_help=True)
app.add_typer(notifications_app, name="notifications")
dlq_app = typer.Typer(help="Dead letters: messages a consumer could not apply.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

T = TypeVar("T")


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    port: int
    factory: str  # import path of the app factory


# Every service that exists, with its fixed default port.
SERVICES: dict[str, ServiceEntry] = {
    "registers": ServiceEntry("registers", 8001, "services.registers.main:build_app"),
    "thresholds": ServiceEntry("thresholds", 8002, "services.thresholds.main:build_app"),
    "casework": ServiceEntry("casework", 8003, "services.casework.main:build_app"),
    "cme": ServiceEntry("cme", 8004, "services.cme.main:build_app"),
    "notifications": ServiceEntry("notifications", 8005, "services.notifications.main:build_app"),
}

DEMO_LA = "999"
DEMO_SCHOOLS = [
    ("100001", "Riverside Primary School", "primary", False, True),
    ("100002", "Hillcrest Academy", "secondary", False, True),
    ("100003", "St Anne's Independent School", "all-through", True, False),
]
EMBEDDED_PG_PORT = 55432
TANSU_PORT = 19092


def _fail(message: str) -> typer.Exit:
    typer.secho(message, fg=typer.colors.RED, err=True)
    return typer.Exit(code=1)


def _registers_db(fn: Callable[..., Awaitable[T]]) -> T:
    """Run `fn(session, settings)` in one transaction against the registers schema."""
    from services.registers.settings import RegistersSettings
    from shared.db import make_engine, make_sessionmaker
    from shared.errors import Problem

    async def main() -> T:
        settings = RegistersSettings()
        engine = make_engine(settings.database_url, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                return await fn(session, settings)
        finally:
            await engine.dispose()

    try:
        return asyncio.run(main())
    except Problem as exc:
        raise _fail(f"{exc.title}: {exc.detail}") from exc
    except OSError as exc:
        raise _fail(f"Cannot reach the platform database ({exc}). Is `make run` running?") from exc


# ---------------------------------------------------------------- run / serve / migrate


@app.command()
def serve(
    service: Annotated[str, typer.Argument(help=f"One of: {', '.join(SERVICES)}")],
    host: str = "127.0.0.1",
    port: Annotated[int | None, typer.Option(help="Default: the service's fixed port")] = None,
    workers: Annotated[int, typer.Option(help="HTTP worker processes")] = 1,
) -> None:
    """Run one service (HTTP API and its background workers)."""
    import uvicorn

    entry = SERVICES.get(service)
    if entry is None:
        raise _fail(f"Unknown service {service!r}; choose one of: {', '.join(SERVICES)}")
    os.environ["HOST"] = host
    os.environ["PORT"] = str(port or entry.port)
    os.environ[f"{service.upper()}_PORT"] = str(port or entry.port)
    uvicorn.run(
        entry.factory,
        factory=True,
        host=host,
        port=port or entry.port,
        workers=workers,
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=10,
    )


@app.command()
def migrate(service: Annotated[str | None, typer.Argument(help="Default: every service")] = None) -> None:
    """Apply database migrations (each service's schema)."""
    from shared.migrations import upgrade
    from shared.settings import PlatformSettings

    url = PlatformSettings().database_url
    for name in [service] if service else list(SERVICES):
        upgrade(name, url)
        typer.echo(f"migrated {name}")


def _write_platform_env(values: dict[str, str]) -> None:
    path = platform_env_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{k}={v}\n" for k, v in values.items()))
    path.chmod(0o600)


def _read_platform_env() -> dict[str, str]:
    path = platform_env_file()
    if not path.exists():
        return {}
    pairs = (line.split("=", 1) for line in path.read_text().splitlines() if "=" in line)
    return {k.strip(): v.strip() for k, v in pairs}


def _seed_demo_la() -> None:
    from services.registers import schemas, service

    async def seed(session: Any, settings: Any) -> None:
        for urn, name, phase, independent, dsa in DEMO_SCHOOLS:
            if await session.get(service.School, urn) is None:
                body = schemas.SchoolIn(
                    urn=urn,
                    name=name,
                    la_code=DEMO_LA,
                    phase=phase,
                    independent=independent,
                    data_sharing_agreement=dsa,
                )
                await service.add_school(session, settings, body)

    _registers_db(seed)


@app.command()
def run() -> None:
    """Start PostgreSQL and the broker (unless DATABASE_URL / KAFKA_BOOTSTRAP_SERVERS point at
    running ones), migrate, seed a demo LA and run every service until Ctrl-C."""
    from shared.devstack import EmbeddedPostgres, TansuBroker, ensure_database
    from shared.encryption import new_key

    root = data_dir()
    root.mkdir(parents=True, exist_ok=True)
    previous = _read_platform_env()
    postgres = broker = None
    children: list[subprocess.Popen[bytes]] = []

    def shutdown(*_: Any) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, shutdown)
    signal.signal(signal.SIGINT, shutdown)
    try:
        database_url = os.environ.get("DATABASE_URL")
        if not database_url:
            postgres = EmbeddedPostgres(root / "postgres", EMBEDDED_PG_PORT)
            admin_url = postgres.start()
            asyncio.run(ensure_database(admin_url, "attendance"))
            database_url = admin_url.rsplit("/", 1)[0] + "/attendance"
            typer.echo(f"PostgreSQL (embedded) on 127.0.0.1:{EMBEDDED_PG_PORT}, data in {root / 'postgres'}")
        bootstrap = os.environ.get("KAFKA_BOOTSTRAP_SERVERS")
        if not bootstrap:
            broker = TansuBroker(TANSU_PORT, root / "tansu.log")
            bootstrap = broker.start()
            typer.echo(f"Kafka-protocol broker (Tansu, in memory) on {bootstrap}")
        env = {
            "DATABASE_URL": database_url,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "JWT_SECRET": os.environ.get("JWT_SECRET") or previous.get("JWT_SECRET") or secrets.token_urlsafe(48),
            "SECRETS_KEY": os.environ.get("SECRETS_KEY") or previous.get("SECRETS_KEY") or new_key(),
        }
        _write_platform_env(env)
        os.environ.update(env)
        migrate(None)
        _seed_demo_la()
        for entry in SERVICES.values():
            children.append(
                subprocess.Popen(
                    [sys.executable, "-m", "shared.cli", "serve", entry.name, "--port", str(entry.port)],
                    env={**os.environ, "LOG_JSON": os.environ.get("LOG_JSON", "false")},
                )
            )
        for entry in SERVICES.values():
            _wait_http(f"http://127.0.0.1:{entry.port}/healthz", 30)
        _print_banner()
        while all(child.poll() is None for child in children):
            time.sleep(0.5)
        raise _fail("A service stopped unexpectedly; shutting down.")
    except KeyboardInterrupt:
        typer.echo("\nStopping…")
    finally:
        for child in children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)
        for child in children:
            try:
                child.wait(15)
            except subprocess.TimeoutExpired:
                child.kill()
        if broker:
            broker.stop()
        if postgres:
            postgres.stop()
        typer.echo("Stopped.")


def _wait_http(url: str, timeout: float) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise _fail(f"{url} did not answer within {timeout:.0f}s")


def _print_banner() -> None:
    from shared.auth import Role

    school_token = _token(Role.SCHOOL, {DEMO_SCHOOLS[0][0]}, None, "demo-mis", 12 * 3600)
    la_token = _token(Role.LA_OFFICER, set(), DEMO_LA, "demo-officer", 12 * 3600)
    typer.echo("\nThe platform is running. Docs:")
    for entry in SERVICES.values():
        typer.echo(f"  {entry.name:<14} http://127.0.0.1:{entry.port}/docs")
    typer.echo(f"\nDemo LA {DEMO_LA}, schools: " + ", ".join(f"{u} {n}" for u, n, *_ in DEMO_SCHOOLS))
    typer.echo(f"\nSchool token (URN {DEMO_SCHOOLS[0][0]}, 12 h), paste into Authorize:\n{school_token}")
    typer.echo(f"\nLA officer token (LA {DEMO_LA}, 12 h):\n{la_token}")
    typer.echo("\nCtrl-C stops everything.")


# ---------------------------------------------------------------- tokens


def _token(role: Any, urns: set[str], la_code: str | None, subject: str, ttl: int) -> str:
    from shared.auth import issue_token
    from shared.settings import PlatformSettings

    return issue_token(PlatformSettings(), subject=subject, role=role, urns=urns, la_code=la_code, ttl_seconds=ttl)


@app.command()
def token(
    role: Annotated[str, typer.Option(help="school, la_officer, la_system or ops")],
    urn: Annotated[list[str] | None, typer.Option(help="School URN (repeat for several); role school")] = None,
    la_code: Annotated[str | None, typer.Option(help="LA code; roles la_officer and la_system")] = None,
    subject: Annotated[str, typer.Option(help="Who the token is for")] = "dev",
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds", min=1)] = 3600,
) -> None:
    """Print a dev bearer token signed with the running platform's key."""
    from services.registers import service
    from shared.auth import Role

    try:
        parsed = Role(role)
    except ValueError as exc:
        raise _fail(f"Unknown role {role!r}; choose school, la_officer, la_system or ops") from exc
    urns = set(urn or [])

    async def check_urns(session: Any, settings: Any) -> None:
        for one in urns:
            await service.get_school(session, one)

    if urns:
        _registers_db(check_urns)
    try:
        typer.echo(_token(parsed, urns, la_code, subject, ttl))
    except ValueError as exc:
        raise _fail(str(exc)) from exc


# ---------------------------------------------------------------- schools


@school_app.command("add")
def school_add(
    urn: Annotated[str, typer.Option()],
    la_code: Annotated[str, typer.Option()],
    name: Annotated[str, typer.Option()],
    phase: Annotated[str, typer.Option(help="primary, secondary, special, …")] = "primary",
    independent: bool = False,
    data_sharing_agreement: bool = False,
) -> None:
    """Register a school."""
    from pydantic import ValidationError

    from services.registers import schemas, service

    try:
        body = schemas.SchoolIn(
            urn=urn,
            la_code=la_code,
            name=name,
            phase=phase,
            independent=independent,
            data_sharing_agreement=data_sharing_agreement,
        )
    except ValidationError as exc:
        raise _fail(_validation_message(exc)) from exc

    async def add(session: Any, settings: Any) -> Any:
        return service.school_out(await service.add_school(session, settings, body))

    school = _registers_db(add)
    typer.echo(f"added {school.urn} {school.name} (LA {school.la_code})")


@school_app.command("list")
def school_list(la_code: Annotated[str | None, typer.Option()] = None) -> None:
    """List registered schools."""
    from services.registers import service
    from shared.auth import Principal, Role

    async def list_all(session: Any, settings: Any) -> list[Any]:
        ops = Principal(subject="cli", role=Role.OPS)
        schools, _ = await service.list_schools(session, ops, la_code, None, 10_000)
        return [service.school_out(s) for s in schools]

    for s in _registers_db(list_all):
        flags = ", ".join(
            f for f, on in (("independent", s.independent), ("data sharing", s.data_sharing_agreement)) if on
        )
        typer.echo(f"{s.urn}  LA {s.la_code}  {s.phase:<12} {s.name}" + (f"  ({flags})" if flags else ""))


@school_app.command("update")
def school_update(
    urn: Annotated[str, typer.Option()],
    name: Annotated[str | None, typer.Option()] = None,
    la_code: Annotated[str | None, typer.Option()] = None,
    phase: Annotated[str | None, typer.Option()] = None,
    independent: Annotated[bool | None, typer.Option("--independent/--not-independent")] = None,
    data_sharing_agreement: Annotated[
        bool | None, typer.Option("--data-sharing-agreement/--no-data-sharing-agreement")
    ] = None,
) -> None:
    """Change a school's details."""
    from pydantic import ValidationError

    from services.registers import schemas, service

    given = {
        "name": name,
        "la_code": la_code,
        "phase": phase,
        "independent": independent,
        "data_sharing_agreement": data_sharing_agreement,
    }
    try:
        patch = schemas.SchoolPatch(**{k: v for k, v in given.items() if v is not None})
    except ValidationError as exc:
        raise _fail(_validation_message(exc)) from exc

    async def update(session: Any, settings: Any) -> Any:
        school = await service.get_school(session, urn)
        return service.school_out(await service.update_school(session, settings, school, patch))

    school = _registers_db(update)
    typer.echo(f"updated {school.urn} {school.name} (LA {school.la_code})")


def _validation_message(exc: Any) -> str:
    return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())


# ---------------------------------------------------------------- API clients


@client_app.command("create")
def client_create(
    name: Annotated[str, typer.Option(help="Who uses it, e.g. 'Arbor MIS for Riverside'")],
    role: Annotated[str, typer.Option(help="school, la_officer, la_system or ops")],
    urn: Annotated[list[str] | None, typer.Option(help="URN (repeat); role school")] = None,
    la_code: Annotated[str | None, typer.Option()] = None,
) -> None:
    """Create an API client; its secret is printed once and stored hashed."""
    from services.registers import service
    from shared.auth import Role

    try:
        parsed = Role(role)
    except ValueError as exc:
        raise _fail(f"Unknown role {role!r}") from exc

    async def create(session: Any, settings: Any) -> tuple[str, str]:
        client, secret = await service.create_client(session, name, parsed, urn or [], la_code)
        return client.client_id, secret

    client_id, secret = _registers_db(create)
    typer.echo(f"client_id:     {client_id}\nclient_secret: {secret}\n(the secret is not shown again)")


@client_app.command("list")
def client_list() -> None:
    """List API clients (never their secrets)."""
    from services.registers import service

    async def list_all(session: Any, settings: Any) -> list[Any]:
        return await service.list_clients(session)

    for c in _registers_db(list_all):
        binding = ",".join(c.urns) if c.urns else (c.la_code or "-")
        state = f"revoked {c.revoked_at:%Y-%m-%d}" if c.revoked_at else "active"
        typer.echo(f"{c.client_id}  {c.role:<10} {binding:<20} {state:<18} {c.name}")


@client_app.command("revoke")
def client_revoke(client_id: Annotated[str, typer.Argument()]) -> None:
    """Revoke an API client: it can no longer obtain tokens."""
    from services.registers import service

    async def revoke(session: Any, settings: Any) -> Any:
        return await service.revoke_client(session, client_id)

    client = _registers_db(revoke)
    typer.echo(f"revoked {client.client_id} ({client.name})")


# ---------------------------------------------------------------- retention


@registers_app.command("purge")
def registers_purge(
    run_by: Annotated[str, typer.Option(help="Who runs the purge (recorded in the audit)")] = "ops-cli",
) -> None:
    """Delete register entries older than the retention period (default 6 years); audited."""
    from services.registers import service

    async def purge(session: Any, settings: Any) -> Any:
        return await service.purge_expired_marks(session, settings, run_by)

    result = _registers_db(purge)
    typer.echo(
        f"purged entries dated before {result.cutoff}: {result.marks_deleted} marks, "
        f"{result.amendments_deleted} amendments, {result.submissions_deleted} submissions "
        f"(run by {result.run_by} at {datetime.now(UTC):%Y-%m-%d %H:%M} UTC)"
    )


@thresholds_app.command("rebuild")
def thresholds_rebuild() -> None:
    """Replay the marks topic from the start into fresh running state, then re-evaluate every
    pupil (alerts that disagree with the rebuilt state are corrected and published)."""
    from services.thresholds.consumers import rebuild
    from services.thresholds.settings import ThresholdsSettings
    from shared.db import make_engine, make_sessionmaker

    async def main() -> Any:
        settings = ThresholdsSettings()
        engine = make_engine(settings.database_url, pool_size=2)
        try:
            return await rebuild(settings, make_sessionmaker(engine))
        finally:
            await engine.dispose()

    try:
        report = asyncio.run(main())
    except OSError as exc:
        raise _fail(f"Cannot reach the platform database or broker ({exc}). Is `make run` running?") from exc
    typer.echo(
        f"replayed {report.events} events ({report.unreadable} unreadable and {report.rejected} rejected, skipped "
        "as when they were dead-lettered); "
        f"re-evaluated {report.pupils_evaluated} pupils"
    )


# ---------------------------------------------------------------- simulation


def _simulation_urls(overrides: list[str]) -> Any:
    from shared.simulation.drive import Urls

    urls = {name: f"http://127.0.0.1:{entry.port}" for name, entry in SERVICES.items()}
    for item in overrides:
        name, _, url = item.partition("=")
        if name not in urls or not url:
            raise _fail(f"--url takes SERVICE=URL with SERVICE one of {', '.join(SERVICES)}; got {item!r}")
        urls[name] = url
    return Urls(urls["registers"], urls["cme"], urls["thresholds"], urls["notifications"])


@app.command()
def simulate(
    seed: Annotated[int, typer.Option(help="The same seed plays the same LA and term")] = 1,
    schools: Annotated[int, typer.Option(min=1, max=100, help="Schools in the LA")] = 3,
    pupils: Annotated[int, typer.Option(min=1, max=4000, help="Pupils on each school's roll at the start")] = 30,
    weeks: Annotated[int, typer.Option(min=1, max=14, help="Teaching weeks in the term (plus a half-term week)")] = 6,
    ending_before: Annotated[
        datetime | None,
        typer.Option(formats=["%Y-%m-%d"], help="The term ends on the last Friday before this day (default: today)"),
    ] = None,
    la_code: Annotated[str, typer.Option(help="The simulated LA's 3-digit code")] = "990",
    first_urn: Annotated[
        int | None, typer.Option(help="URN of the first school, the others follow (default: from the seed)")
    ] = None,
    concurrency: Annotated[int, typer.Option(min=1, max=256, help="Requests in flight at once")] = 8,
    url: Annotated[
        list[str] | None, typer.Option(help="SERVICE=URL for a service not on its usual local port (repeatable)")
    ] = None,
    webhook: Annotated[
        str | None, typer.Option(help="Subscribe this URL to the LA's alerts, new cases and roll changes")
    ] = None,
) -> None:
    """Generate an LA and a term of its schools' registers, amendments, joiners and leavers, and
    play it against the running platform through its HTTP APIs."""
    from datetime import timedelta

    from shared.settings import PlatformSettings
    from shared.simulation.drive import SimulationError, Subscription, drive, mint_tokens
    from shared.simulation.generate import LaConfig, generate, recent_term
    from shared.simulation.recount import EVENT_FILTERS
    from shared.time import school_today

    today = school_today()
    before = ending_before.date() if ending_before else today
    term = recent_term(before, weeks, calendar_until=today + timedelta(days=366))
    if term.last_day >= today:
        raise _fail(f"The term would end on {term.last_day}: registers take no future dates; pick an earlier day.")
    first = first_urn if first_urn is not None else 300000 + (seed * 100) % 600000
    if not 100000 <= first <= 999999 - schools:
        raise _fail(f"--first-urn must leave room for {schools} six-digit URNs; got {first}")
    try:
        config = LaConfig(term, tuple(str(first + i) for i in range(schools)), la_code, pupils, seed)
    except ValueError as exc:
        raise _fail(str(exc)) from exc
    plan = generate(config)
    days = term.school_days()
    urns = f"URN {first}" if schools == 1 else f"URNs {first} to {first + schools - 1}"
    typer.echo(
        f"LA {la_code}, seed {seed}: {schools} school{'s' * (schools > 1)} ({urns}), {len(plan.pupils)} pupils, "
        f"{len(days)} school days from {days[0]} to {days[-1]}"
    )
    subscription = Subscription(webhook, EVENT_FILTERS) if webhook else None
    try:
        report = asyncio.run(
            drive(
                plan,
                _simulation_urls(url or []),
                mint_tokens(PlatformSettings(), plan),
                concurrency=concurrency,
                subscription=subscription,
            )
        )
    except SimulationError as exc:
        hint = {None: "Is the platform running (`make run`)?", 409: "Choose another --seed or --first-urn."}
        raise _fail(f"{exc}. {hint.get(exc.status, '')}".strip()) from exc
    if report.subscription:
        typer.echo(f"webhook:     subscription {report.subscription['id']}, secret {report.subscription['secret']}")
    typer.echo(f"registers:   {report.registers:,} ({report.marks:,} marks)")
    typer.echo(f"amendments:  {report.amendments:,}")
    typer.echo(f"admissions:  {report.admissions:,}")
    typer.echo(f"deletions:   {report.deletions:,}")
    typer.echo(f"marks/s:     {report.marks_per_second:,.0f} ({report.seconds:.1f} s to play the term)")


@casework_app.command("diagram")
def casework_diagram(
    output: Annotated[Path, typer.Option(help="Where to write it")] = REPO_ROOT / "docs" / "casework-workflow.md",
) -> None:
    """Write the workflow document (Mermaid diagram and states) generated from the transition table."""
    from shared.domain.casework import workflow_markdown

    output.write_text(workflow_markdown())
    typer.echo(f"wrote {output}")


@notifications_app.command("asyncapi")
def notifications_asyncapi(
    output: Annotated[Path, typer.Option(help="Where to write it")] = REPO_ROOT / "docs" / "asyncapi.json",
) -> None:
    """Write the AsyncAPI document of every topic and webhook, generated from the event models."""
    from shared.asyncapi import asyncapi_json

    output.write_text(asyncapi_json())
    typer.echo(f"wrote {output}")


@notifications_app.command("reencrypt-secrets")
def notifications_reencrypt_secrets() -> None:
    """Re-encrypt every stored webhook signing secret under the first key of SECRETS_KEY (after
    putting a new key in front; the old one can be dropped once this has run)."""
    from services.notifications.service import reencrypt_secrets
    from services.notifications.settings import NotificationsSettings
    from shared.db import make_engine, make_sessionmaker
    from shared.encryption import secret_box

    async def main() -> int:
        settings = NotificationsSettings()
        engine = make_engine(settings.database_url, pool_size=1)
        try:
            async with make_sessionmaker(engine)() as session, session.begin():
                return await reencrypt_secrets(session, secret_box(settings.secrets_key))
        finally:
            await engine.dispose()

    try:
        count = asyncio.run(main())
    except OSError as exc:
        raise _fail(f"Cannot reach the platform database ({exc}). Is `make run` running?") from exc
    typer.echo(f"re-encrypted the signing secrets of {count} subscriptions")


# ---------------------------------------------------------------- dead letters

DeadLetterTopic = Annotated[str, typer.Argument(help="The source topic, e.g. attendance.marks.v1 (or its .dlq)")]


def _on_broker(fn: Callable[[str, str], Awaitable[T]], source: str) -> T:
    """Run `fn(bootstrap, source)` against the platform's broker."""
    from aiokafka.errors import KafkaError

    from shared.dead_letters import NoDeadLetterTopic
    from shared.settings import PlatformSettings

    bootstrap = PlatformSettings().kafka_bootstrap_servers
    try:
        return asyncio.run(fn(bootstrap, source))
    except NoDeadLetterTopic as exc:
        raise _fail(f"No topic {exc} on the broker: no consumer of {source} has run yet") from exc
    except (KafkaError, OSError) as exc:
        raise _fail(f"Cannot reach the broker at {bootstrap} ({exc!r}). Is `make run` running?") from exc


@dlq_app.command("list")
def dlq_list(topic: DeadLetterTopic) -> None:
    """List a topic's dead letters (never their content): where each failed, which consumer, the
    event, whether it was replayed, and the error."""
    from shared.dead_letters import list_dead_letters
    from shared.events import dead_letter_topic

    source = topic.removesuffix(".dlq")
    letters = _on_broker(list_dead_letters, source)
    waiting = sum(not letter.replayed for letter in letters)
    typer.echo(f"{dead_letter_topic(source)}: {len(letters)} dead letter(s), {waiting} not replayed")
    for letter in letters:
        error = " ".join(letter.error.split())[:300]  # one line
        typer.echo(
            f"{letter.partition}:{letter.offset}  from {letter.source}  consumer {letter.consumer}"
            f"  event {letter.event_id or '-'} {letter.event_type or '(not a CloudEvent)'}"
            f"  {'replayed' if letter.replayed else 'not replayed'}  {error}"
        )


@dlq_app.command("replay")
def dlq_replay(topic: DeadLetterTopic) -> None:
    """Publish the dead letters not replayed before back to their topic (same key and value).
    Consumers that applied an event before skip it; fix what made it fail first."""
    from shared.dead_letters import replay_dead_letters

    source = topic.removesuffix(".dlq")
    count = _on_broker(replay_dead_letters, source)
    typer.echo(f"replayed {count} dead letter(s) to {source}" if count else f"nothing to replay for {source}")


def main() -> None:
    app()


if __name__ == "__main__":
    main()
