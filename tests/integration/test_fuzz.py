"""Every service's OpenAPI fuzzed with schemathesis through real HTTP, with valid credentials.

Whatever a client sends, a service never answers 5xx; every 4xx is RFC 9457 problem+json whose
`status` is the HTTP status; responses match the documented schemas and content types; a 405
lists in `Allow` every method the path takes; no operation answers without a token.

The run is reproducible (fixed seed, deterministic generation) and small enough for CI;
FUZZ_EXAMPLES raises the examples per operation (`make fuzz`). Requests go as the credentials
an operation's users hold, bound to an LA and a school of this test's own, whose URN and LA code
every body names (what the fuzzer writes stays there) and paths and queries half the time, with a
pupil's UPN, so that handlers run past their lookups.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import schemathesis
from hypothesis import strategies as st
from schemathesis.engine import Status, events

from shared.auth import Role
from shared.domain.upn import make_upn
from shared.errors import PROBLEM_MEDIA_TYPE
from shared.time import school_today
from tests.conftest import RunningService, eventually

# schemathesis's own strategies touch the `random` module; hypothesis warns on every run.
pytestmark = pytest.mark.filterwarnings(
    "ignore:Do not use the `random` module:hypothesis.errors.HypothesisDeprecationWarning"
)

EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "5"))
FUZZ_LA = "875"  # no other test uses it: what the fuzzer writes (policies, subscriptions...) stays here
PUPIL = make_upn(int(FUZZ_LA), 2025, 25, 1)

# Who calls each service: the roles its operations are for, so that requests get past the role checks.
CALLERS: dict[str, tuple[Role, ...]] = {
    "registers": (Role.OPS, Role.SCHOOL),
    "thresholds": (Role.LA_OFFICER, Role.SCHOOL),
    "casework": (Role.LA_OFFICER, Role.SCHOOL),
    "cme": (Role.SCHOOL, Role.LA_OFFICER),
    "notifications": (Role.LA_SYSTEM, Role.LA_OFFICER),
}

CHECKS = (
    "not_a_server_error",
    "response_schema_conformance",
    "content_type_conformance",
    "ignored_auth",
    "unsupported_method",
    "allow_header_conformance",
    "problem_details",
)


@schemathesis.check
def problem_details(ctx: schemathesis.CheckContext, response: schemathesis.Response, case: schemathesis.Case) -> None:
    """A 4xx is problem+json with the RFC 9457 members, its `status` the HTTP status."""
    if not 400 <= response.status_code < 500:
        return
    content_type = response.headers.get("content-type", [""])[0]
    assert content_type.startswith(PROBLEM_MEDIA_TYPE), f"{response.status_code} served as {content_type!r}"
    body = response.json()
    missing = {"type", "title", "status", "detail"} - set(body)
    assert not missing, f"problem+json without {', '.join(sorted(missing))}"
    assert body["status"] == response.status_code, f"status {body['status']} in a {response.status_code} response"
    wrong = [member for member in ("type", "title", "detail") if not isinstance(body[member], str)]
    assert not wrong, f"problem+json members that are not strings: {', '.join(wrong)}"


def _strings(value: Any, path: tuple[str | int, ...] = ()) -> Iterator[tuple[str | int, ...]]:
    """Where the strings are in a request part (a path parameter, query or JSON body)."""
    if isinstance(value, str):
        yield path
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from _strings(item, (*path, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from _strings(item, (*path, index))


def _with_nul(value: Any, path: tuple[str | int, ...]) -> Any:
    """A copy of `value` whose string at `path` ends with a NUL (the parts on the way are copied too:
    they may be the schema's own examples)."""
    if not path:
        return f"{value}\x00"
    copy = value.copy()
    copy[path[0]] = _with_nul(value[path[0]], path[1:])
    return copy


def fuzz(openapi: dict[str, Any], base_url: str, callers: dict[Role, str], urn: str) -> list[str]:
    """Run every phase (examples, coverage, fuzzing, stateful) and return each failure with a curl to replay it."""
    half = {"probability": 0.5}
    config = schemathesis.Config.from_dict(
        {
            "seed": 1,
            "base-url": base_url,
            "generation": {
                "max-examples": EXAMPLES,
                "deterministic": True,
                "database": "none",
                "dictionaries": {"integer": {"dictionary": "too-big", "probability": 0.2}},
            },
            "checks": {"enabled": False, **{name: {"enabled": True} for name in CHECKS}},
            "dictionaries": {
                "urn": {"values": [urn]},
                "upn": {"values": [PUPIL]},
                "la_code": {"values": [FUZZ_LA]},
                # Numbers no PostgreSQL integer holds, for the parameters the schema leaves unbounded.
                "too-big": {"values": [2**63, -(2**63) - 1, 10**30]},
            },
            "parameters": {
                # In paths and queries, half the time the fuzzing LA's own, to get past the lookups.
                **{name: {"dictionary": name, **half} for name in ("urn", "upn", "la_code")},
                # Bodies always name them, so what the fuzzer writes stays in its own LA and school.
                **{f"body.{name}": {"dictionary": name} for name in ("urn", "la_code")},
                **{key: {"dictionary": "upn", **half} for key in ("body.upn", "body.marks[*].upn")},
            },
        }
    )
    schema = schemathesis.openapi.from_dict(openapi, config=config)

    @schema.hook
    def flatmap_case(context: schemathesis.HookContext, case: schemathesis.Case) -> st.SearchStrategy:
        """Half the valid cases end one of their strings with a NUL, which PostgreSQL text cannot
        hold: hypothesis seldom draws one, and a service must reject it, not fail storing it."""
        if case.meta is None or case.meta.generation.mode is not schemathesis.GenerationMode.POSITIVE:
            return st.just(case)
        parts = ("path_parameters", "query", "body")
        slots = [(part, path) for part in parts for path in _strings(getattr(case, part))]

        def spiked(slot: tuple[str, tuple[str | int, ...]]) -> schemathesis.Case:
            part, path = slot
            setattr(case, part, _with_nul(getattr(case, part), path))
            return case

        return st.one_of(st.just(case), st.sampled_from(slots).map(spiked)) if slots else st.just(case)

    in_turn = itertools.cycle(callers.items())

    @schema.auth(refresh_interval=None)
    class InTurn:
        """Each request goes as the next caller in turn, so every operation meets each role (and its
        role checks) for the cost of one run; `X-Caller` names the role in the failure's curl."""

        def get(self, case: schemathesis.Case, ctx: schemathesis.AuthContext) -> tuple[Role, str]:
            return next(in_turn)

        def set(self, case: schemathesis.Case, caller: tuple[Role, str], ctx: schemathesis.AuthContext) -> None:
            role, token = caller
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}", "X-Caller": role.value}

    failures = []
    for event in schemathesis.engine.from_schema(schema).execute():
        if isinstance(event, events.FatalError):
            raise event.exception
        if isinstance(event, events.NonFatalError):
            failures.append(f"{event.label}: {event.info.message}")
        if isinstance(event, events.ScenarioFinished) and event.status is Status.FAILURE:
            for checks in event.recorder.checks.values():
                for check in checks:
                    if check.failure_info is not None:
                        failure = check.failure_info.failure
                        failures.append(
                            f"{failure.operation} [{check.name}] {failure.title}: {failure.message}\n"
                            f"    {check.failure_info.code_sample}"
                        )
    return failures


@pytest.fixture
async def fuzz_school(
    registers: RunningService,
    thresholds: RunningService,
    cme: RunningService,
    token: Callable[..., str],
    new_urn: Callable[[], str],
) -> str:
    """A school of the fuzzing LA, known to the services downstream of the registry."""
    urn = new_urn()
    ops = token(Role.OPS)
    async with registers.client(ops) as http:
        body = {"urn": urn, "name": f"School {urn}", "la_code": FUZZ_LA, "phase": "primary"}
        assert (await http.post("/v1/schools", json=body)).status_code == 201
    for service, path in ((thresholds, f"/v1/schools/{urn}/attendance"), (cme, f"/v1/schools/{urn}/admissions")):
        async with service.client(ops) as http:

            async def known(http: httpx.AsyncClient = http, path: str = path) -> bool:
                return (await http.get(path)).status_code == 200

            await eventually(known, f"school {urn} to reach {service.settings.service_name}")
    return urn


@pytest.mark.parametrize("name", CALLERS)
async def test_fuzz(
    name: str,
    request: pytest.FixtureRequest,
    notifications: RunningService,
    token: Callable[..., str],
    fuzz_school: str,
) -> None:
    service: RunningService = request.getfixturevalue(name)
    async with service.client() as http:
        openapi = (await http.get("/openapi.json")).json()
    credentials = {
        Role.OPS: {},
        Role.SCHOOL: {"urns": {fuzz_school}},
        Role.LA_OFFICER: {"la_code": FUZZ_LA},
        Role.LA_SYSTEM: {"la_code": FUZZ_LA},
    }
    callers = {role: token(role, **credentials[role]) for role in CALLERS[name]}
    # In a thread: schemathesis calls with a blocking client, and the services run on this loop.
    failures = await asyncio.to_thread(fuzz, openapi, service.base_url, callers, fuzz_school)
    assert not failures, "\n".join(failures)


# ---------------------------------------------------------------- what fuzzing found (each was a 500)

TOO_BIG = str(2**63)


@dataclass(frozen=True)
class Rejected:
    service: str
    role: Role
    method: str
    path: str  # may name {urn} and {la}
    location: str  # of the one error item
    json: Any = None
    data: dict[str, str] | None = None


REJECTED = [
    pytest.param(Rejected("casework", Role.LA_OFFICER, "GET", f"/v1/cases/{TOO_BIG}", "path.case_id"), id="case-id"),
    pytest.param(
        Rejected("thresholds", Role.LA_OFFICER, "GET", f"/v1/alerts/{TOO_BIG}", "path.alert_id"), id="alert-id"
    ),
    pytest.param(Rejected("cme", Role.LA_OFFICER, "GET", f"/v1/cme/cases/{10**20}", "path.case_id"), id="cme-case-id"),
    pytest.param(
        Rejected("notifications", Role.LA_SYSTEM, "GET", f"/v1/subscriptions/{TOO_BIG}", "path.subscription_id"),
        id="subscription-id",
    ),
    pytest.param(
        Rejected("notifications", Role.LA_SYSTEM, "GET", f"/v1/deliveries?cursor={TOO_BIG}", "query.cursor"),
        id="deliveries-cursor",
    ),
    pytest.param(
        Rejected("registers", Role.SCHOOL, "GET", f"/v1/schools/{{urn}}/marks?since={TOO_BIG}", "query.since"),
        id="change-feed-since",
    ),
    pytest.param(
        Rejected("cme", Role.SCHOOL, "POST", "/v1/cme/cases", "notes", {"urn": "{urn}", "upn": PUPIL, "notes": "x\0"}),
        id="nul-in-body",
    ),
    pytest.param(
        Rejected(
            "casework", Role.LA_OFFICER, "POST", "/v1/cases", "reason", {"urn": "{urn}", "upn": PUPIL, "reason": "\0"}
        ),
        id="nul-in-case-reason",
    ),
    pytest.param(
        Rejected("notifications", Role.LA_OFFICER, "PUT", "/v1/letter-templates/{la}/stage_1", "body", {"body": "\0"}),
        id="nul-in-template",
    ),
    pytest.param(
        Rejected("notifications", Role.LA_SYSTEM, "GET", "/v1/deliveries?key=A%00", "query.key"), id="nul-in-query"
    ),
    pytest.param(
        Rejected(
            "registers",
            Role.OPS,
            "POST",
            "/v1/auth/token",
            "client_id",
            data={"grant_type": "client_credentials", "client_id": "a\0", "client_secret": "b"},
        ),
        id="nul-in-form",
    ),
    pytest.param(
        Rejected(
            "thresholds",
            Role.LA_OFFICER,
            "GET",
            f"/v1/schools/{{urn}}/pupils/{PUPIL}/attendance?as_of=0001-01-01T00:00:00%2B14:00",
            "query.as_of",
        ),
        id="instant-before-utc-year-1",
    ),
    pytest.param(
        Rejected(
            "notifications",
            Role.LA_SYSTEM,
            "POST",
            "/v1/subscriptions/1/replay",
            "since",
            {"since": "9999-12-31T23:59:59-14:00"},
        ),
        id="instant-after-utc-year-9999",
    ),
]


def _filled(value: Any, **names: str) -> Any:
    if isinstance(value, str):
        return value.format(**names)
    if isinstance(value, dict):
        return {key: _filled(item, **names) for key, item in value.items()}
    return value


@pytest.mark.parametrize("rejected", REJECTED)
async def test_input_the_database_cannot_take_is_a_422_naming_it(
    rejected: Rejected,
    request: pytest.FixtureRequest,
    notifications: RunningService,
    token: Callable[..., str],
    fuzz_school: str,
) -> None:
    service: RunningService = request.getfixturevalue(rejected.service)
    credential = {Role.SCHOOL: {"urns": {fuzz_school}}, Role.OPS: {}}.get(rejected.role, {"la_code": FUZZ_LA})
    names = {"urn": fuzz_school, "la": FUZZ_LA}
    async with service.client(token(rejected.role, **credential)) as http:
        response = await http.request(
            rejected.method,
            _filled(rejected.path, **names),
            json=_filled(rejected.json, **names),
            data=rejected.data,
        )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert [error["location"] for error in response.json()["errors"]] == [rejected.location]


async def test_unpaired_surrogate_in_free_text_evidence_is_a_422(
    casework: RunningService, token: Callable[..., str], fuzz_school: str
) -> None:
    """JSON may escape half a surrogate pair; pydantic keeps it in an unconstrained string, and
    storing the evidence failed."""
    async with casework.client(token(Role.LA_OFFICER, la_code=FUZZ_LA)) as http:

        async def opened() -> httpx.Response | None:
            response = await http.post("/v1/cases", json={"urn": fuzz_school, "upn": PUPIL, "reason": "Concern"})
            return None if response.status_code == 404 else response  # the school is yet to reach casework

        response = await eventually(opened, f"school {fuzz_school} to reach casework")
        assert response.status_code == 201, response.text
        case = response.json()
        today = school_today().isoformat()
        review = {"held_on": today, "outcome": "improved", "notes": "\ud800"}
        response = await http.post(
            f"/v1/cases/{case['id']}/actions",
            # json.dumps escapes the lone surrogate (httpx's `json=` would fail to encode it)
            content=json.dumps({"kind": "review", "occurred_on": today, "details": review}),
            headers={"content-type": "application/json"},
        )
        timeline = await http.get(f"/v1/cases/{case['id']}/timeline")
    assert response.status_code == 422, response.text
    assert [error["location"] for error in response.json()["errors"]] == ["details.notes"]
    assert [entry["kind"] for entry in timeline.json() if entry["what"] == "evidence"] == []


async def test_a_405_allows_every_method_of_the_path(notifications: RunningService, token: Callable[..., str]) -> None:
    async with notifications.client(token(Role.LA_SYSTEM, la_code=FUZZ_LA)) as http:
        response = await http.request("OPTIONS", "/v1/subscriptions")
    assert response.status_code == 405
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert response.headers["allow"] == "GET, POST"
