"""Play a plan against the running platform through its public HTTP APIs.

Schools go into the registry (ops token) with their calendar; the driver then waits until the CME
and thresholds services have heard of each school (they learn schools and calendars from the
stream). Optionally an LA system subscribes a webhook. Then the rounds of the plan, in order:
roll admissions and deletions (CME), registers and amendments (registers), each school's MIS with
its own school token. The actions of a round go out `concurrency` at a time; a round starts once
the one before it has been accepted and `after_round`, if given, has returned (a test waits there
for the stream to settle, so that the platform sees the term one round at a time).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from shared.auth import Role, issue_token
from shared.settings import PlatformSettings
from shared.simulation.plan import Action, Admission, Amendment, Deletion, Plan, Register, Round

TAKEN_BY = {"name": "MIS sync", "position": "Class teacher"}


class SimulationError(RuntimeError):
    """The platform refused an action of the plan (`status`: its HTTP status) or did not answer
    (`status` None); the message says which action and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class Urls:
    """Base URLs of the services the driver talks to; notifications only for a webhook."""

    registers: str
    cme: str
    thresholds: str
    notifications: str | None = None


@dataclass(frozen=True)
class Tokens:
    ops: str
    schools: Mapping[str, str]  # URN -> the school MIS's token
    la_system: str | None = None  # for the webhook subscription


def mint_tokens(settings: PlatformSettings, plan: Plan, ttl_seconds: int = 12 * 3600) -> Tokens:
    """Tokens signed with the platform's key, as `attendance token` makes them."""

    def mint(role: Role, subject: str, **binding: Any) -> str:
        return issue_token(settings, subject=subject, role=role, ttl_seconds=ttl_seconds, **binding)

    return Tokens(
        ops=mint(Role.OPS, "simulator"),
        schools={s.urn: mint(Role.SCHOOL, f"simulated-mis-{s.urn}", urns={s.urn}) for s in plan.schools},
        la_system=mint(Role.LA_SYSTEM, f"simulated-la-system-{plan.la_code}", la_code=plan.la_code),
    )


@dataclass(frozen=True)
class Subscription:
    """A webhook the LA's system subscribes before the term is played."""

    url: str
    event_types: tuple[str, ...]


@dataclass
class Report:
    schools: int = 0
    registers: int = 0
    marks: int = 0
    amendments: int = 0
    admissions: int = 0
    deletions: int = 0
    seconds: float = 0.0  # playing the rounds, from the first to the last
    subscription: dict[str, Any] | None = field(default=None, repr=False)  # as created, with its secret

    @property
    def marks_per_second(self) -> float:
        return self.marks / self.seconds if self.seconds else 0.0


AfterRound = Callable[[Round], Awaitable[None]]


async def drive(
    plan: Plan,
    urls: Urls,
    tokens: Tokens,
    *,
    concurrency: int = 8,
    subscription: Subscription | None = None,
    after_round: AfterRound | None = None,
    ready_timeout: float = 30.0,
) -> Report:
    """Play `plan`; raises SimulationError on the first action the platform does not accept."""
    if concurrency < 1:
        raise ValueError(f"concurrency must be at least 1, got {concurrency}")
    if subscription is not None and not urls.notifications:
        raise ValueError("a webhook subscription needs the notifications service's URL")
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    clients = {
        name: httpx.AsyncClient(base_url=url, timeout=120, limits=limits)
        for name, url in (
            ("registers", urls.registers),
            ("cme", urls.cme),
            ("thresholds", urls.thresholds),
            ("notifications", urls.notifications),
        )
        if url
    }
    player = _Player(plan, clients, tokens, asyncio.Semaphore(concurrency))
    try:
        await player.add_schools(ready_timeout)
        if subscription is not None:
            player.report.subscription = await player.subscribe(subscription)
        started = time.perf_counter()
        for round_ in plan.rounds:
            await player.play_round(round_)
            if after_round is not None:
                await after_round(round_)
        player.report.seconds = time.perf_counter() - started
    finally:
        await asyncio.gather(*(client.aclose() for client in clients.values()))
    return player.report


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:500]
    if isinstance(body, dict) and ("title" in body or "detail" in body):
        errors = body.get("errors")
        return f"{body.get('title')}: {body.get('detail')}" + (f" {errors}" if errors else "")
    return str(body)[:500]


class _Player:
    def __init__(
        self, plan: Plan, clients: dict[str, httpx.AsyncClient], tokens: Tokens, slots: asyncio.Semaphore
    ) -> None:
        self.plan = plan
        self.clients = clients
        self.tokens = tokens
        self.slots = slots
        self.report = Report()

    async def _send(
        self, service: str, method: str, path: str, token: str, what: str, expect: tuple[int, ...], **kw: Any
    ) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token}", **kw.pop("headers", {})}
        async with self.slots:
            try:
                response = await self.clients[service].request(method, path, headers=headers, **kw)
            except httpx.HTTPError as exc:
                raise SimulationError(
                    f"{what}: {service} at {self.clients[service].base_url} did not answer ({exc!r})"
                ) from exc
        if response.status_code not in expect:
            raise SimulationError(f"{what}: {response.status_code} {_problem(response)}", response.status_code)
        return response

    async def add_schools(self, ready_timeout: float) -> None:
        for school in self.plan.schools:
            body = {
                "urn": school.urn,
                "name": school.name,
                "la_code": school.la_code,
                "phase": school.phase,
                "calendar": school.calendar.to_dict(),
            }
            what = f"registering school {school.urn}"
            response = await self._send(
                "registers", "POST", "/v1/schools", self.tokens.ops, what, (201, 409), json=body
            )
            if response.status_code == 409:
                raise SimulationError(
                    f"school {school.urn} is already registered: a plan with these URNs was played before", 409
                )
            self.report.schools += 1
        # Admissions need the school in CME, and the thresholds service counts school days on the
        # school's calendar: both learn them from the registers' stream.
        for school in self.plan.schools:
            token = self.tokens.schools[school.urn]
            await self._wait_for(f"/v1/schools/{school.urn}/notifications/compliance", "cme", token, ready_timeout)
            await self._wait_for(f"/v1/schools/{school.urn}/attendance", "thresholds", token, ready_timeout)

    async def _wait_for(self, path: str, service: str, token: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while True:
            response = await self._send(service, "GET", path, token, f"waiting for {service}", (200, 404))
            if response.status_code == 200:
                return
            if time.monotonic() > deadline:
                raise SimulationError(f"{service} has not heard of the school after {timeout:.0f} s ({path})")
            await asyncio.sleep(0.1)

    async def subscribe(self, subscription: Subscription) -> dict[str, Any]:
        if self.tokens.la_system is None:
            raise SimulationError("a webhook subscription needs an LA system token")
        body = {
            "url": subscription.url,
            "event_types": list(subscription.event_types),
            "description": f"Simulated LA {self.plan.la_code}",
        }
        token, what = self.tokens.la_system, "subscribing the webhook"
        response = await self._send("notifications", "POST", "/v1/subscriptions", token, what, (201,), json=body)
        return response.json()

    async def play_round(self, round_: Round) -> None:
        """Every action of the round at once (as many in flight as the slots allow); on the first
        failure the others are cancelled."""
        tasks = [asyncio.ensure_future(self.play(action)) for action in round_.actions]
        try:
            await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise

    async def play(self, action: Action) -> None:
        if isinstance(action, Register):
            await self._register(action)
        elif isinstance(action, Amendment):
            await self._amend(action)
        elif isinstance(action, Admission):
            await self._admit(action)
        elif isinstance(action, Deletion):
            await self._delete(action)

    async def _register(self, register: Register) -> None:
        marks = []
        for upn, code, minutes_late in register.marks():
            mark: dict[str, Any] = {"upn": upn, "code": code}
            if minutes_late is not None:
                mark["minutes_late"] = minutes_late
            marks.append(mark)
        body = {"date": register.date.isoformat(), "session": register.session, "taken_by": TAKEN_BY, "marks": marks}
        # The same key for the same register: a retried post is answered, not recorded twice.
        key = uuid.uuid5(uuid.NAMESPACE_URL, f"register:{register.urn}:{register.date}:{register.session}")
        await self._send(
            "registers",
            "POST",
            f"/v1/schools/{register.urn}/registers",
            self.tokens.schools[register.urn],
            f"{register.session} register of {register.urn} on {register.date}",
            (201,),
            json=body,
            headers={"Idempotency-Key": str(key)},
        )
        self.report.registers += 1
        self.report.marks += len(marks)

    async def _amend(self, amendment: Amendment) -> None:
        body = {
            "code": amendment.code,
            "reason": amendment.reason,
            "amended_by": {"name": amendment.amended_by.name, "position": amendment.amended_by.position},
        }
        path = f"/v1/schools/{amendment.urn}/marks/{amendment.upn}/{amendment.date}/{amendment.session}/amendments"
        what = f"amending {amendment.upn}'s {amendment.session} mark of {amendment.date} at {amendment.urn}"
        await self._send("registers", "POST", path, self.tokens.schools[amendment.urn], what, (201,), json=body)
        self.report.amendments += 1

    async def _admit(self, admission: Admission) -> None:
        body = {
            "upn": admission.upn,
            "admitted_on": admission.admitted_on.isoformat(),
            "nc_year": admission.nc_year,
            "date_of_birth": admission.date_of_birth.isoformat(),
            "previous_urn": admission.previous_urn,
            "previous_school": admission.previous_school,
        }
        path = f"/v1/schools/{admission.urn}/admissions"
        what = f"admitting {admission.upn} at {admission.urn}"
        await self._send("cme", "POST", path, self.tokens.schools[admission.urn], what, (201,), json=body)
        self.report.admissions += 1

    async def _delete(self, deletion: Deletion) -> None:
        body = {
            "upn": deletion.upn,
            "deleted_on": deletion.deleted_on.isoformat(),
            "ground": deletion.ground,
            "destination": {"urn": deletion.destination_urn, "la_code": deletion.destination_la_code},
            "return_details": {
                "pupil_name": f"Pupil {deletion.upn}",
                "pupil_address": f"{deletion.upn[-3:]} Simulated Road",
                "parents": [{"name": f"Parent of {deletion.upn}", "address": f"{deletion.upn[-3:]} Simulated Road"}],
            },
        }
        path = f"/v1/schools/{deletion.urn}/deletions"
        what = f"deleting {deletion.upn} from {deletion.urn}"
        await self._send("cme", "POST", path, self.tokens.schools[deletion.urn], what, (201,), json=body)
        self.report.deletions += 1
