"""Every endpoint of every service, enumerated from its OpenAPI document (a new endpoint is covered
as soon as it exists, and must be classified in ACCESS to pass): without a valid token it answers
401, with the wrong role 403 or 404, and to another school or another LA 403, 404 or a list that
holds none of the target's data; every refusal is problem+json, and nothing is written.

The target is a school in an LA of its own with a pupil whose record exists in every service (marks
with a comment, an alert and the case it opened, its stage letter, roll entries, a deletion return
with names, a CME case, a webhook subscription and its deliveries). "Nothing is written" is checked
by reading every read endpoint for the target before and after and finding it unchanged.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest_asyncio

from shared.auth import Role, issue_token
from shared.domain.upn import make_upn
from shared.settings import PlatformSettings
from shared.time import school_today
from tests.conftest import eventually
from tests.integration.test_cme import admission, deletion, new_school, post, school_days
from tests.integration.test_letters import STAGE_1_TEMPLATE, YEAR_START
from tests.integration.test_notifications import receiver

PROBLEM = "application/problem+json"
LA, OTHER_LA = "860", "862"
URN, NEIGHBOUR = "860001", "860002"  # the target school and another school of the same LA
PUPIL, LEAVER, NEWCOMER = (make_upn(int(LA), 2015, 25, n) for n in (1, 2, 3))
PUPIL_NAME = "Octavia Winterbottom-Vance"
COMMENT = "Grandmother unwell; collected early by an aunt"
SERVICES = ("registers", "thresholds", "casework", "cme", "notifications")

# Answer without a token. Besides these: /docs, /docs/oauth2-redirect, /redoc and /openapi.json,
# which are not in the OpenAPI document itself.
PUBLIC = {
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("POST", "/v1/auth/token"),  # exchanges client credentials for a token (throttled)
    ("GET", "/v1/casework/workflow"),
    ("GET", "/v1/casework/workflow.mmd"),
    ("GET", "/v1/asyncapi.json"),
}

S, O, Y, P = Role.SCHOOL, Role.LA_OFFICER, Role.LA_SYSTEM, Role.OPS  # noqa: E741 (O: officer)
EVERYONE = frozenset(Role)
LA_AND_OPS = frozenset({O, Y, P})

# (service, method, path) -> the roles allowed, holding a credential that reaches the target.
ACCESS: dict[tuple[str, str, str], frozenset[Role]] = {
    ("registers", "POST", "/v1/schools/{urn}/registers"): frozenset({S, P}),
    ("registers", "GET", "/v1/schools/{urn}/registers/{date}/{session_name}"): EVERYONE,
    ("registers", "POST", "/v1/schools/{urn}/marks/{upn}/{date}/{session_name}/amendments"): frozenset({S, P}),
    ("registers", "GET", "/v1/schools/{urn}/pupils/{upn}/marks"): EVERYONE,
    ("registers", "GET", "/v1/schools/{urn}/marks"): EVERYONE,
    ("registers", "GET", "/v1/codes"): EVERYONE,
    ("registers", "POST", "/v1/schools"): frozenset({P}),
    ("registers", "GET", "/v1/schools"): EVERYONE,
    ("registers", "GET", "/v1/schools/{urn}"): EVERYONE,
    ("registers", "PATCH", "/v1/schools/{urn}"): frozenset({P}),
    ("registers", "PUT", "/v1/schools/{urn}/calendar"): frozenset({S, P}),
    ("thresholds", "GET", "/v1/schools/{urn}/pupils/{upn}/attendance"): EVERYONE,
    ("thresholds", "GET", "/v1/alerts"): EVERYONE,
    ("thresholds", "GET", "/v1/alerts/{alert_id}"): EVERYONE,
    ("thresholds", "GET", "/v1/policies/{la_code}"): LA_AND_OPS,
    ("thresholds", "PUT", "/v1/policies/{la_code}"): frozenset({O, P}),
    ("thresholds", "GET", "/v1/policy-presets"): EVERYONE,
    ("thresholds", "GET", "/v1/schools/{urn}/attendance"): EVERYONE,
    ("thresholds", "GET", "/v1/las/{la_code}/attendance"): LA_AND_OPS,
    ("thresholds", "GET", "/v1/policies/{la_code}/versions"): LA_AND_OPS,
    # Ops reads casework; schools and LAs act on it.
    ("casework", "POST", "/v1/cases"): frozenset({S, O, Y}),
    ("casework", "GET", "/v1/cases"): EVERYONE,
    ("casework", "GET", "/v1/cases/{case_id}"): EVERYONE,
    ("casework", "POST", "/v1/cases/{case_id}/actions"): frozenset({S, O, Y}),
    ("casework", "POST", "/v1/cases/{case_id}/transitions"): frozenset({S, O, Y}),
    ("casework", "GET", "/v1/cases/{case_id}/timeline"): EVERYONE,
    ("casework", "GET", "/v1/cases/{case_id}/evidence"): EVERYONE,
    ("casework", "GET", "/v1/casework/worklist"): EVERYONE,
    ("cme", "POST", "/v1/schools/{urn}/admissions"): frozenset({S, P}),
    ("cme", "GET", "/v1/schools/{urn}/admissions"): EVERYONE,
    ("cme", "GET", "/v1/schools/{urn}/admissions/{admission_id}"): EVERYONE,
    ("cme", "POST", "/v1/schools/{urn}/deletions"): frozenset({S, P}),
    ("cme", "GET", "/v1/schools/{urn}/deletions/{deletion_id}"): EVERYONE,
    ("cme", "GET", "/v1/cme/deletion-grounds"): EVERYONE,
    ("cme", "GET", "/v1/pupils/{upn}/roll"): LA_AND_OPS,
    ("cme", "GET", "/v1/schools/{urn}/notifications/compliance"): EVERYONE,
    ("cme", "GET", "/v1/notifications/compliance"): LA_AND_OPS,
    ("cme", "GET", "/v1/cme/policies/{la_code}"): EVERYONE,  # schools need their LA's deadlines
    ("cme", "PUT", "/v1/cme/policies/{la_code}"): frozenset({O, P}),
    ("cme", "POST", "/v1/cme/cases"): frozenset({S, O}),
    ("cme", "GET", "/v1/cme/cases"): EVERYONE,
    ("cme", "GET", "/v1/cme/cases/{case_id}"): EVERYONE,
    ("cme", "POST", "/v1/cme/cases/{case_id}/enquiries"): frozenset({S, O}),
    ("cme", "POST", "/v1/cme/cases/{case_id}/close"): frozenset({O}),
    ("cme", "GET", "/v1/cme/worklist"): EVERYONE,
    ("notifications", "GET", "/v1/subscriptions"): LA_AND_OPS,
    ("notifications", "POST", "/v1/subscriptions"): frozenset({Y}),  # a webhook: LA systems only
    ("notifications", "GET", "/v1/subscriptions/{subscription_id}"): LA_AND_OPS,
    ("notifications", "DELETE", "/v1/subscriptions/{subscription_id}"): LA_AND_OPS,
    ("notifications", "POST", "/v1/subscriptions/{subscription_id}/secret/rotate"): frozenset({Y, P}),
    ("notifications", "POST", "/v1/subscriptions/{subscription_id}/replay"): LA_AND_OPS,
    ("notifications", "POST", "/v1/subscriptions/{subscription_id}/digest"): LA_AND_OPS,
    ("notifications", "GET", "/v1/deliveries"): LA_AND_OPS,
    ("notifications", "GET", "/v1/deliveries/{delivery_id}"): LA_AND_OPS,
    ("notifications", "POST", "/v1/deliveries/{delivery_id}/redeliver"): LA_AND_OPS,
    ("notifications", "GET", "/v1/letters"): EVERYONE,
    ("notifications", "GET", "/v1/letters/{letter_id}"): EVERYONE,
    ("notifications", "GET", "/v1/letters/{letter_id}/document"): EVERYONE,
    ("notifications", "POST", "/v1/letters/{letter_id}/sent"): frozenset({S, O}),
    ("notifications", "GET", "/v1/letter-templates/{la_code}/{kind}"): LA_AND_OPS,
    ("notifications", "PUT", "/v1/letter-templates/{la_code}/{kind}"): frozenset({O}),
    **{(service, "GET", "/v1/audit/record-reads"): frozenset({O, P}) for service in SERVICES},
}

# The target's registers: two days absent, then present (see the `target` fixture).
REGISTER_DAYS = school_days(YEAR_START, 11)
NEW_DAY, TODAY = REGISTER_DAYS.pop().isoformat(), school_today().isoformat()

# A valid body for every endpoint that takes one: an invalid one would be refused (422) before
# the role or the school is checked, and prove nothing.
BODIES: dict[tuple[str, str], Any] = {
    ("POST", "/v1/schools/{urn}/registers"): {
        "date": NEW_DAY,
        "session": "AM",
        "marks": [{"upn": PUPIL, "code": "/", "comment": "written by whom?"}],
    },
    ("POST", "/v1/schools/{urn}/marks/{upn}/{date}/{session_name}/amendments"): {
        "code": "M",
        "reason": "Appointment card",
        "amended_by": {"name": "A Jones", "position": "Attendance officer"},
    },
    ("POST", "/v1/schools"): {"urn": "860009", "name": "Not registered", "la_code": LA, "phase": "primary"},
    ("PATCH", "/v1/schools/{urn}"): {"name": "Renamed"},
    ("PUT", "/v1/schools/{urn}/calendar"): {
        "terms": [{"name": "Autumn 1", "start": "2025-09-03", "end": "2025-10-24"}],
        "inset_days": [],
    },
    ("PUT", "/v1/policies/{la_code}"): {"preset": "halton", "reason": "Not yours"},
    ("POST", "/v1/cases"): {"urn": URN, "upn": NEWCOMER, "reason": "Concerns"},
    ("POST", "/v1/cases/{case_id}/actions"): {
        "kind": "contact",
        "occurred_on": TODAY,
        "details": {"method": "call", "with_whom": "Parent", "summary": "Discussed absences"},
    },
    ("POST", "/v1/cases/{case_id}/transitions"): {"event": "escalate_to_stage_2", "payload": {"reason": "No change"}},
    ("POST", "/v1/schools/{urn}/admissions"): admission(NEWCOMER),
    ("POST", "/v1/schools/{urn}/deletions"): deletion(PUPIL, "died"),
    ("PUT", "/v1/cme/policies/{la_code}"): {"addition_deadline": "fifth_day"},
    ("POST", "/v1/cme/cases"): {"upn": NEWCOMER, "urn": URN, "notes": "Not seen"},
    ("POST", "/v1/cme/cases/{case_id}/enquiries"): {
        "made_on": TODAY,
        "officer": "J Smith, EWO",
        "method": "home_visit",
        "outcome": "no_response",
    },
    ("POST", "/v1/cme/cases/{case_id}/close"): {"outcome": "moved_la", "notes": "Moved"},
    ("POST", "/v1/subscriptions"): {"url": "http://127.0.0.1:9/hook", "event_types": ["roll.*"]},
    ("POST", "/v1/subscriptions/{subscription_id}/secret/rotate"): {},
    ("POST", "/v1/subscriptions/{subscription_id}/replay"): {"since": "2025-01-01T00:00:00Z"},
    ("POST", "/v1/letters/{letter_id}/sent"): {"posted_on": TODAY},
    ("PUT", "/v1/letter-templates/{la_code}/{kind}"): {"body": STAGE_1_TEMPLATE},
}
QUERIES: dict[str, dict[str, str]] = {"/v1/notifications/compliance": {"la_code": LA}}


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def target(registers, thresholds, casework, cme, notifications, token) -> Any:
    """The target school and pupil, every record in place; the path parameters that reach them."""
    services = dict(zip(SERVICES, (registers, thresholds, casework, cme, notifications), strict=True))
    school = await new_school(registers, cme, token, lambda: URN, la_code=LA)
    await new_school(registers, cme, token, lambda: NEIGHBOUR, la_code=LA)
    officer, system = token(O, la_code=LA), token(Y, la_code=LA)
    async with receiver() as hooks:
        async with notifications.client(system) as http:
            body = {"url": hooks.url, "event_types": ["roll.*", "casework.*", "cme.*"]}
            subscription = await post(http, "/v1/subscriptions", body, 201)
        async with cme.client(school["token"]) as mis:
            for upn in (PUPIL, LEAVER):
                await post(mis, f"/v1/schools/{URN}/admissions", admission(upn, YEAR_START - timedelta(days=7)), 201)
            returned = {"pupil_name": PUPIL_NAME, "pupil_address": "3 Quarry Lane, Slade"}
            body = deletion(LEAVER, "died", return_details=returned)
            leaver = await post(mis, f"/v1/schools/{URN}/deletions", body, 201)
            cme_case = await post(mis, "/v1/cme/cases", {"upn": PUPIL, "urn": URN, "notes": "Not seen"}, 201)
            on_roll = (await mis.get(f"/v1/schools/{URN}/admissions")).json()["items"]
        # Two days absent, then present: the alert opens a case at Stage 1, which asks for its letter.
        async with registers.client(school["token"]) as mis:
            for index, day in enumerate(REGISTER_DAYS):
                for session, present in (("AM", "/"), ("PM", "\\")):
                    mark = {"upn": PUPIL, "code": "O" if index < 2 else present, "comment": COMMENT}
                    body = {"date": day.isoformat(), "session": session, "marks": [mark]}
                    await post(mis, f"/v1/schools/{URN}/registers", body, 201)
        async with notifications.client(officer) as http:

            async def letter() -> list[dict[str, Any]]:
                return (await http.get("/v1/letters", params={"status": "ready"})).json()["items"]

            [stage_1] = await eventually(letter, "the Stage 1 letter", timeout=30)
            deliveries = (await http.get("/v1/deliveries")).json()["items"]
        async with thresholds.client(officer) as http:
            [alert, *_] = (await http.get("/v1/alerts", params={"upn": PUPIL})).json()["items"]
        common = {"urn": URN, "upn": PUPIL, "la_code": LA, "date": REGISTER_DAYS[0].isoformat(), "session_name": "AM"}
        params = {
            "registers": common,
            "thresholds": {**common, "alert_id": alert["id"]},
            "casework": {**common, "case_id": stage_1["case_id"]},
            "cme": {
                **common,
                "case_id": cme_case["id"],
                "admission_id": next(a["id"] for a in on_roll if a["upn"] == PUPIL),
                "deletion_id": leaver["id"],
            },
            "notifications": {
                **common,
                "subscription_id": subscription["id"],
                "delivery_id": deliveries[0]["id"],
                "letter_id": stage_1["id"],
                "kind": "stage_1",
            },
        }
        async with contextlib.AsyncExitStack() as stack:
            # One client (one connection pool) per service for the hundreds of requests below.
            clients = {name: await stack.enter_async_context(service.client()) for name, service in services.items()}
            routes = {name: (await http.get("/openapi.json")).json()["paths"] for name, http in clients.items()}
            world = {"services": services, "clients": clients, "params": params, "routes": routes, "officer": officer}
            world["before"] = await eventually(lambda: settled(world), "the target's records to settle", timeout=30)
            yield world


def operations(world: dict[str, Any]) -> list[tuple[str, str, str, dict[str, Any]]]:
    """(service, METHOD, path template, OpenAPI operation) of every endpoint but the public ones."""
    return [
        (name, method.upper(), path, operation)
        for name, paths in world["routes"].items()
        for path, methods in paths.items()
        for method, operation in methods.items()
        if (method.upper(), path) not in PUBLIC
    ]


async def call(world: dict[str, Any], service: str, method: str, path: str, token: str | None):
    concrete = path.format(**world["params"][service])
    body = BODIES.get((method, path))
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    return await world["clients"][service].request(method, concrete, json=body, params=QUERIES.get(path), headers=auth)


async def snapshot(world: dict[str, Any]) -> dict[str, Any]:
    """Every read endpoint's answer for the target, as the target's LA officer sees it (the audit
    log aside: reading the records adds to it)."""
    answers = {}
    for service, method, path, _ in operations(world):
        if method != "GET" or path == "/v1/audit/record-reads":
            continue
        response = await call(world, service, method, path, world["officer"])
        assert response.status_code == 200, (service, path, response.text)
        is_json = response.headers["content-type"].startswith("application/json")
        answers[f"{service} {path}"] = _without_clock(response.json()) if is_json else response.content
    return answers


def _without_clock(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_clock(v) for k, v in value.items() if k != "generated_at"}
    if isinstance(value, list):
        return [_without_clock(v) for v in value]
    return value


async def settled(world: dict[str, Any]) -> dict[str, Any] | None:
    """The snapshot once two in a row agree (consumers and deliveries have caught up)."""
    first = await snapshot(world)
    return first if first == await snapshot(world) else None


async def assert_untouched(world: dict[str, Any]) -> None:
    after = await snapshot(world)
    changed = [key for key in world["before"] if after[key] != world["before"][key]]
    assert not changed, f"refused requests changed: {changed}"


def refusal_problem(response, statuses: tuple[int, ...], what: str) -> str | None:
    """None if the answer is one of `statuses` as problem+json, else why not."""
    if response.status_code not in statuses:
        return f"{what}: {response.status_code} {response.text[:200]}"
    if response.headers.get("content-type") != PROBLEM or response.json().get("status") != response.status_code:
        return f"{what}: not problem+json ({response.headers.get('content-type')})"
    return None


def test_every_endpoint_is_classified(target):
    """A new endpoint fails here until it is given its roles (and a sample body if it takes one),
    and the public list stays what it is."""
    found = {(service, method, path) for service, method, path, _ in operations(target)}
    assert found == set(ACCESS), {"unclassified": found - set(ACCESS), "gone": set(ACCESS) - found}
    for service, method, path, operation in operations(target):
        assert operation.get("security") == [{"HTTPBearer": []}], (service, method, path)
        if "requestBody" in operation:
            assert (method, path) in BODIES, f"no sample body for {method} {path}"
    public = {(m.upper(), p) for paths in target["routes"].values() for p, ms in paths.items() for m in ms}
    assert public & PUBLIC == PUBLIC


async def test_public_endpoints_answer_without_a_token(target):
    for name, service in target["services"].items():
        async with service.client() as http:
            for path in ("/healthz", "/readyz", "/metrics", "/docs", "/redoc", "/openapi.json"):
                assert (await http.get(path)).status_code == 200, (name, path)
    async with target["services"]["casework"].client() as http:
        assert (await http.get("/v1/casework/workflow")).status_code == 200
        assert (await http.get("/v1/casework/workflow.mmd")).status_code == 200
    async with target["services"]["notifications"].client() as http:
        assert (await http.get("/v1/asyncapi.json")).status_code == 200


def bad_tokens(settings: PlatformSettings) -> dict[str, str | None]:
    def signed(**overrides: Any) -> str:
        ttl = overrides.pop("ttl_seconds", None)
        return issue_token(settings.model_copy(update=overrides), subject="intruder", role=P, ttl_seconds=ttl)

    return {
        "no token": None,
        "expired": signed(ttl_seconds=-60),
        "another secret": signed(jwt_secret="another-secret-" + "y" * 40),
        "another issuer": signed(jwt_issuer="someone-else"),
        "another audience": signed(jwt_audience="someone-else"),
    }


async def answers(world: dict[str, Any], requests: list[tuple[Any, str, str, str, str | None]]) -> list[Any]:
    """(label, service, method, path, token) requests, a few at a time: (label, response) pairs."""
    gate = asyncio.Semaphore(8)

    async def one(service: str, method: str, path: str, token: str | None) -> Any:
        async with gate:
            return await call(world, service, method, path, token)

    responses = await asyncio.gather(*(one(*request[1:]) for request in requests))
    return list(zip([request[0] for request in requests], responses, strict=True))


async def test_no_valid_token_no_access(target, platform_settings):
    requests = [
        (f"{kind}: {service} {method} {path}", service, method, path, bad)
        for kind, bad in bad_tokens(platform_settings).items()
        for service, method, path, _ in operations(target)
    ]
    failures = []
    for what, response in await answers(target, requests):
        failure = refusal_problem(response, (401,), what)
        if failure is None and response.headers.get("www-authenticate") != "Bearer":
            failure = f"{what}: no WWW-Authenticate"
        failures.append(failure)
    assert not [f for f in failures if f], "\n".join(f for f in failures if f)
    await assert_untouched(target)


def in_scope(token: Callable[..., str], role: Role) -> str:
    """A credential of `role` that reaches the target school and LA."""
    subject = f"{role.value}-of-the-target"
    if role is S:
        return token(S, urns={URN}, subject=subject)
    if role in (O, Y):
        return token(role, la_code=LA, subject=subject)
    return token(P, subject=subject)


async def test_wrong_roles_are_refused_and_right_ones_reach_the_reads(target, token):
    requests = [
        ((role, service, method, path), service, method, path, in_scope(token, role))
        for service, method, path, _ in operations(target)
        for role in Role
        # an allowed write would change the target: other tests make those
        if role not in ACCESS[(service, method, path)] or method == "GET"
    ]
    failures = []
    for (role, service, method, path), response in await answers(target, requests):
        what = f"{role.value}: {service} {method} {path}"
        if role not in ACCESS[(service, method, path)]:
            failures.append(refusal_problem(response, (403, 404), what))
        elif response.status_code != 200:
            failures.append(f"{what}: {response.status_code} {response.text[:200]}")
    assert not [f for f in failures if f], "\n".join(f for f in failures if f)
    await assert_untouched(target)
    await assert_no_reads_recorded(target, token, {f"{role.value}-of-the-target" for role in Role})


OUTSIDERS = {
    "a school of the same LA": lambda token: token(S, urns={NEIGHBOUR}, subject="neighbour-school"),
    "an officer of another LA": lambda token: token(O, la_code=OTHER_LA, subject="other-la-officer"),
    "a system of another LA": lambda token: token(Y, la_code=OTHER_LA, subject="other-la-system"),
}


async def test_other_schools_and_las_reach_nothing_of_the_target(target, token):
    """Refused (403/404), or, for lists and the platform's reference data, an answer without the
    target's school or pupil in it; and nothing of the target changes."""
    requests = [
        (f"{who}: {service} {method} {path}", service, method, path, credential(token))
        for who, credential in OUTSIDERS.items()
        for service, method, path, _ in operations(target)
    ]
    failures = []
    for what, response in await answers(target, requests):
        if response.status_code in (403, 404):
            failures.append(refusal_problem(response, (403, 404), what))
        elif not 200 <= response.status_code < 300:
            failures.append(f"{what}: {response.status_code} {response.text[:200]}")
        elif any(secret in response.text for secret in (f'"{URN}"', PUPIL_NAME, COMMENT)):
            failures.append(f"{what}: the answer holds the target's data")
    assert not [f for f in failures if f], "\n".join(f for f in failures if f)
    await assert_untouched(target)
    await assert_no_reads_recorded(target, token, {"neighbour-school", "other-la-officer", "other-la-system"})


async def assert_no_reads_recorded(world: dict[str, Any], token, readers: set[str]) -> None:
    """Refused requests read nothing: no record read is logged for these readers, except by
    the allowed roles' reads of the target."""
    ops = token(P)
    recorded = []
    for name, service in world["services"].items():
        async with service.client(ops) as http:
            items = (await http.get("/v1/audit/record-reads", params={"upn": PUPIL, "limit": 1000})).json()["items"]
        recorded += [(name, item["reader"], item["endpoint"]) for item in items if item["reader"] in readers]
    allowed = {
        (service, reader, f"GET {path}")
        for (service, method, path), roles in ACCESS.items()
        for role in roles
        for reader in readers
        if method == "GET" and reader == f"{role.value}-of-the-target"
    }
    assert [entry for entry in recorded if entry not in allowed] == []
