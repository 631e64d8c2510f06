"""Who may do what in the registers service: tenant isolation between schools, LA scoping,
read-only LA roles, ops, bearer-token validation, the open operational endpoints and the
client-credentials token endpoint.

Every refusal is problem+json, and a refused write is proved to have left no trace by reading
the target school back with an ops token.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import jwt
import pytest
import pytest_asyncio
from argon2 import PasswordHasher
from sqlalchemy import select

from services.registers import service
from services.registers.models import ApiClient
from shared.auth import Role
from shared.db import make_engine, make_sessionmaker
from shared.domain.upn import make_upn
from shared.errors import Problem
from tests.conftest import OTHER_LA, TEST_JWT_SECRET, TEST_LA

PROBLEM = "application/problem+json"
SEEDED = "2025-11-03"  # each school's one stored register (AM)
TARGET = "2025-11-04"  # the date refused writes aim at
WHO = {"name": "A Jones", "position": "Attendance officer"}
CALENDAR = {"terms": [{"name": "Autumn 1", "start": "2025-09-03", "end": "2025-10-24"}], "inset_days": []}


def assert_problem(response, status: int, problem_type: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    problem = response.json()
    assert problem["type"] == f"/problems/{problem_type}"
    assert problem["status"] == status
    return problem


async def add_school(registers, ops_token: str, urn: str, la_code: str) -> None:
    async with registers.client(ops_token) as ops:
        r = await ops.post(
            "/v1/schools", json={"urn": urn, "name": f"School {urn}", "la_code": la_code, "phase": "primary"}
        )
        assert r.status_code == 201, r.text


# URNs for this module's shared schools, apart from the conftest counter (which starts at 200000).
_module_urns = itertools.count(880000)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def world(registers, token) -> dict[str, Any]:
    """School A (LA 801, with its token), B (801) and C (802), B and C each with one stored mark.

    Shared by the module: no test may change B or C (the refusal tests prove they do not), and
    tests that write use A or schools of their own."""
    ops = token(Role.OPS)
    a, b, c = (str(next(_module_urns)) for _ in range(3))
    await asyncio.gather(
        add_school(registers, ops, a, TEST_LA),
        add_school(registers, ops, b, TEST_LA),
        add_school(registers, ops, c, OTHER_LA),
    )
    upns = {b: make_upn(801, 8800, 25, 1), c: make_upn(802, 8800, 25, 2)}
    for urn, upn in upns.items():
        async with registers.client(token(Role.SCHOOL, urns={urn})) as own:
            r = await own.post(
                f"/v1/schools/{urn}/registers",
                json={"date": SEEDED, "session": "AM", "marks": [{"upn": upn, "code": "/"}]},
            )
            assert r.status_code == 201, r.text
    return {"a": a, "a_token": token(Role.SCHOOL, urns={a}), "b": b, "c": c, "upn": upns, "ops": ops}


# (id, method, path, body, write). {urn} and {upn} are filled in for the target school.
OPERATIONS = [
    (
        "post-register",
        "POST",
        "/v1/schools/{urn}/registers",
        {"date": TARGET, "session": "AM", "marks": [{"upn": "{upn}", "code": "/"}]},
        True,
    ),
    ("get-register", "GET", f"/v1/schools/{{urn}}/registers/{SEEDED}/AM", None, False),
    ("get-pupil-marks", "GET", "/v1/schools/{urn}/pupils/{upn}/marks", None, False),
    ("get-change-feed", "GET", "/v1/schools/{urn}/marks", None, False),
    (
        "post-amendment",
        "POST",
        f"/v1/schools/{{urn}}/marks/{{upn}}/{SEEDED}/AM/amendments",
        {"code": "M", "reason": "Parent phoned", "amended_by": WHO},
        True,
    ),
    ("get-school", "GET", "/v1/schools/{urn}", None, False),
    ("put-calendar", "PUT", "/v1/schools/{urn}/calendar", CALENDAR, True),
    ("patch-school", "PATCH", "/v1/schools/{urn}", {"name": "Renamed"}, True),
]
READS = [pytest.param(*op[1:4], id=op[0]) for op in OPERATIONS if not op[4]]
WRITES = [pytest.param(*op[1:4], id=op[0]) for op in OPERATIONS if op[4]]
ALL = [pytest.param(*op[1:4], id=op[0]) for op in OPERATIONS]


def fill(value: Any, urn: str, upn: str) -> Any:
    if isinstance(value, str):
        return value.replace("{urn}", urn).replace("{upn}", upn)
    if isinstance(value, dict):
        return {k: fill(v, urn, upn) for k, v in value.items()}
    if isinstance(value, list):
        return [fill(v, urn, upn) for v in value]
    return value


async def call(registers, token: str | None, method: str, path: str, body: Any, urn: str, upn: str):
    async with registers.client(token) as http:
        return await http.request(method, fill(path, urn, upn), json=fill(body, urn, upn))


async def assert_untouched(registers, world: dict[str, Any], urn: str) -> None:
    """Read back with ops: only the seeded mark, unchanged and unamended; no new register; the
    school's details as created."""
    upn = world["upn"][urn]
    async with registers.client(world["ops"]) as ops:
        target, feed, history, details = await asyncio.gather(
            ops.get(f"/v1/schools/{urn}/registers/{TARGET}/AM"),
            ops.get(f"/v1/schools/{urn}/marks"),
            ops.get(f"/v1/schools/{urn}/pupils/{upn}/marks", params={"from": SEEDED, "to": TARGET}),
            ops.get(f"/v1/schools/{urn}"),
        )
    assert_problem(target, 404, "register-not-found")
    assert [(c["upn"], c["date"], c["code"], c["change_version"]) for c in feed.json()["changes"]] == [
        (upn, SEEDED, "/", 1)
    ]
    assert [(m["code"], m["amendments"]) for m in history.json()["marks"]] == [("/", [])]
    school = details.json()
    assert (school["name"], school["change_version"]) == (f"School {urn}", 1)
    assert school["calendar"]["terms"] == []


# ---------------------------------------------------------------- schools: tenant isolation


@pytest.mark.parametrize(("method", "path", "body"), ALL)
async def test_school_token_cannot_reach_another_school(registers, world, method, path, body):
    response = await call(registers, world["a_token"], method, path, body, world["b"], world["upn"][world["b"]])
    problem = assert_problem(response, 403, "forbidden")
    assert problem["instance"] == fill(path, world["b"], world["upn"][world["b"]])
    await assert_untouched(registers, world, world["b"])


@pytest.mark.parametrize(("method", "path", "body"), ALL)
async def test_school_token_gets_403_for_an_unregistered_urn_too(
    registers, world, new_urn, new_upn, method, path, body
):
    response = await call(registers, world["a_token"], method, path, body, new_urn(), new_upn())
    assert_problem(response, 403, "forbidden")


async def test_school_token_reaches_its_own_school(registers, world, new_upn):
    a, upn = world["a"], new_upn()
    async with registers.client(world["a_token"]) as http:
        posted = await http.post(
            f"/v1/schools/{a}/registers", json={"date": TARGET, "session": "AM", "marks": [{"upn": upn, "code": "/"}]}
        )
        assert posted.status_code == 201, posted.text
        assert (await http.get(f"/v1/schools/{a}/registers/{TARGET}/AM")).status_code == 200
        assert [c["upn"] for c in (await http.get(f"/v1/schools/{a}/marks")).json()["changes"]] == [upn]
        amended = await http.post(
            f"/v1/schools/{a}/marks/{upn}/{TARGET}/AM/amendments",
            json={"code": "L", "minutes_late": 7, "reason": "Arrived 09:07", "amended_by": WHO},
        )
        assert amended.status_code == 201, amended.text
        calendar = await http.put(f"/v1/schools/{a}/calendar", json=CALENDAR)
        assert calendar.status_code == 200 and calendar.json()["calendar"]["terms"][0]["name"] == "Autumn 1"
        # only ops changes a school's registry entry, even the school's own
        assert_problem(await http.patch(f"/v1/schools/{a}", json={"name": "Mine"}), 403, "forbidden")
        assert_problem(
            await http.post("/v1/schools", json={"urn": "999990", "name": "X", "la_code": "801", "phase": "primary"}),
            403,
            "forbidden",
        )


# ---------------------------------------------------------------- LA roles: read-only, one LA

LA_ROLES = [pytest.param(Role.LA_OFFICER, id="la_officer"), pytest.param(Role.LA_SYSTEM, id="la_system")]


@pytest.mark.parametrize("role", LA_ROLES)
async def test_la_role_reads_every_school_in_its_la(registers, world, token, role):
    b, upn = world["b"], world["upn"][world["b"]]
    async with registers.client(token(role, la_code=TEST_LA)) as http:
        school = await http.get(f"/v1/schools/{b}")
        assert school.status_code == 200 and school.json()["la_code"] == TEST_LA
        stored = await http.get(f"/v1/schools/{b}/registers/{SEEDED}/AM")
        assert [(m["upn"], m["code"]) for m in stored.json()["marks"]] == [(upn, "/")]
        history = await http.get(f"/v1/schools/{b}/pupils/{upn}/marks", params={"from": SEEDED, "to": SEEDED})
        assert [m["code"] for m in history.json()["marks"]] == ["/"]
        feed = await http.get(f"/v1/schools/{b}/marks")
        assert [c["upn"] for c in feed.json()["changes"]] == [upn]
        assert (await http.get(f"/v1/schools/{world['a']}")).status_code == 200


@pytest.mark.parametrize("role", LA_ROLES)
@pytest.mark.parametrize(("method", "path", "body"), READS)
async def test_la_role_cannot_read_a_school_in_another_la(registers, world, token, role, method, path, body):
    c = world["c"]
    response = await call(registers, token(role, la_code=TEST_LA), method, path, body, c, world["upn"][c])
    assert_problem(response, 403, "forbidden")


@pytest.mark.parametrize("role", LA_ROLES)
@pytest.mark.parametrize(("method", "path", "body"), WRITES)
async def test_la_role_cannot_write_even_in_its_own_la(registers, world, token, role, method, path, body):
    b = world["b"]
    response = await call(registers, token(role, la_code=TEST_LA), method, path, body, b, world["upn"][b])
    assert_problem(response, 403, "forbidden")
    await assert_untouched(registers, world, b)


@pytest.mark.parametrize("role", LA_ROLES)
async def test_la_role_cannot_register_schools(registers, token, new_urn, role):
    urn = new_urn()
    async with registers.client(token(role, la_code=TEST_LA)) as http:
        response = await http.post(
            "/v1/schools", json={"urn": urn, "name": "X", "la_code": TEST_LA, "phase": "primary"}
        )
    assert_problem(response, 403, "forbidden")
    async with registers.client(token(Role.OPS)) as ops:
        assert_problem(await ops.get(f"/v1/schools/{urn}"), 404, "school-not-found")


# ---------------------------------------------------------------- ops


async def test_ops_can_do_everything_in_every_la(registers, token, new_urn, new_upn):
    ops_token = token(Role.OPS)
    mine, theirs = new_urn(), new_urn()
    await asyncio.gather(
        add_school(registers, ops_token, mine, TEST_LA), add_school(registers, ops_token, theirs, OTHER_LA)
    )
    async with registers.client(ops_token) as ops:
        for urn in (mine, theirs):
            upn = new_upn()
            posted = await ops.post(
                f"/v1/schools/{urn}/registers",
                json={"date": TARGET, "session": "AM", "marks": [{"upn": upn, "code": "N"}]},
            )
            assert posted.status_code == 201, posted.text
            amended = await ops.post(
                f"/v1/schools/{urn}/marks/{upn}/{TARGET}/AM/amendments",
                json={"code": "I", "reason": "Parent phoned", "amended_by": WHO},
            )
            assert amended.status_code == 201, amended.text
            history = await ops.get(f"/v1/schools/{urn}/pupils/{upn}/marks", params={"from": TARGET, "to": TARGET})
            [entry] = history.json()["marks"]
            assert entry["code"] == "I" and [a["previous_code"] for a in entry["amendments"]] == ["N"]
            feed = (await ops.get(f"/v1/schools/{urn}/marks")).json()
            assert [(c["upn"], c["code"]) for c in feed["changes"]] == [(upn, "I")]
            assert (await ops.put(f"/v1/schools/{urn}/calendar", json=CALENDAR)).status_code == 200
            patched = await ops.patch(f"/v1/schools/{urn}", json={"name": "Renamed by ops"})
            assert patched.status_code == 200 and patched.json()["name"] == "Renamed by ops"
        added = new_urn()
        created = await ops.post(
            "/v1/schools", json={"urn": added, "name": "New", "la_code": OTHER_LA, "phase": "secondary"}
        )
        assert created.status_code == 201, created.text
        assert (await ops.get(f"/v1/schools/{added}")).json()["la_code"] == OTHER_LA


# ---------------------------------------------------------------- bearer tokens


def crafted(settings, secret: str = TEST_JWT_SECRET, algorithm: str = "HS256", **overrides: Any) -> str:
    """A token built by hand; every claim valid unless overridden (None drops a claim)."""
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": "crafted",
        "iat": now,
        "exp": now + 600,
        "role": "ops",
    }
    claims.update(overrides)
    return jwt.encode({k: v for k, v in claims.items() if v is not None}, secret, algorithm=algorithm)


BAD_CREDENTIALS = [
    pytest.param(lambda s, t: {}, "bearer token", id="no-authorization-header"),
    pytest.param(lambda s, t: {"Authorization": "Bearer"}, "bearer token", id="bearer-without-token"),
    pytest.param(lambda s, t: {"Authorization": "Bearer not-a-jwt"}, "not valid", id="not-a-jwt"),
    pytest.param(lambda s, t: {"Authorization": f"Basic {crafted(s)}"}, "bearer token", id="basic-scheme"),
    pytest.param(lambda s, t: {"Authorization": f"Bearer {t(Role.OPS, ttl_seconds=-10)}"}, "expired", id="expired"),
    pytest.param(
        lambda s, t: {"Authorization": f"Bearer {crafted(s, secret='another-secret-' + 'y' * 40)}"},
        "not valid",
        id="signed-with-another-secret",
    ),
    pytest.param(
        lambda s, t: {"Authorization": f"Bearer {crafted(s, algorithm='HS512')}"},
        "not valid",
        id="alg-HS512",
        marks=pytest.mark.filterwarnings("ignore:The HMAC key is"),
    ),
    pytest.param(
        lambda s, t: {"Authorization": f"Bearer {crafted(s, secret=None, algorithm='none')}"},
        "not valid",
        id="alg-none-unsigned",
    ),
    pytest.param(
        lambda s, t: {"Authorization": f"Bearer {crafted(s, aud='other-api')}"}, "not valid", id="wrong-audience"
    ),
    pytest.param(
        lambda s, t: {"Authorization": f"Bearer {crafted(s, iss='someone-else')}"}, "not valid", id="wrong-issuer"
    ),
    pytest.param(lambda s, t: {"Authorization": f"Bearer {crafted(s, exp=None)}"}, "not valid", id="no-exp-claim"),
    pytest.param(
        lambda s, t: {"Authorization": f"Bearer {crafted(s, role='admin')}"}, "role binding", id="unknown-role"
    ),
    pytest.param(lambda s, t: {"Authorization": f"Bearer {crafted(s, role=None)}"}, "role binding", id="no-role"),
    pytest.param(
        lambda s, t: {"Authorization": f"Bearer {crafted(s, role='school')}"}, "role binding", id="school-without-urns"
    ),
    pytest.param(
        lambda s, t: {"Authorization": f"Bearer {crafted(s, role='la_officer')}"},
        "role binding",
        id="la-officer-without-la-code",
    ),
    pytest.param(
        lambda s, t: {"Authorization": f"Bearer {crafted(s, urns=['100001'])}"}, "role binding", id="ops-bound-to-urns"
    ),
    pytest.param(
        lambda s, t: {"Authorization": f"Bearer {crafted(s, role='school', urns=['100001'], la_code='801')}"},
        "role binding",
        id="school-with-la-code",
    ),
]


@pytest.mark.parametrize(("headers_for", "detail"), BAD_CREDENTIALS)
async def test_bad_credential_is_401_and_writes_nothing(
    registers, world, token, platform_settings, headers_for, detail
):
    headers = headers_for(platform_settings, token)
    b, upn = world["b"], world["upn"][world["b"]]
    async with registers.client() as http:
        http.headers.update(headers)
        responses = await asyncio.gather(
            http.post(
                f"/v1/schools/{b}/registers",
                json={"date": TARGET, "session": "AM", "marks": [{"upn": upn, "code": "/"}]},
            ),
            http.get(f"/v1/schools/{b}"),
            http.get("/v1/schools"),
            http.get("/v1/codes"),
        )
    for response in responses:
        problem = assert_problem(response, 401, "unauthenticated")
        assert response.headers["www-authenticate"] == "Bearer"
        assert detail in problem["detail"]
    await assert_untouched(registers, world, b)


async def test_crafted_token_is_accepted_when_nothing_is_wrong_with_it(registers, world, platform_settings):
    """The control for the table above: the hand-built token only fails for the defect each case adds."""
    async with registers.client(crafted(platform_settings)) as http:
        assert (await http.get(f"/v1/schools/{world['c']}")).status_code == 200
    school_token = crafted(platform_settings, role="school", urns=[world["b"]])
    async with registers.client(school_token) as http:
        assert (await http.get(f"/v1/schools/{world['b']}")).status_code == 200


# ---------------------------------------------------------------- listing schools


async def all_schools(http, **params: Any) -> list[dict[str, Any]]:
    schools: list[dict[str, Any]] = []
    cursor = None
    while True:
        page = await http.get("/v1/schools", params={**params, "limit": 500, **({"cursor": cursor} if cursor else {})})
        assert page.status_code == 200, page.text
        schools += page.json()["schools"]
        cursor = page.json()["next_cursor"]
        if cursor is None:
            return schools


async def test_school_list_shows_only_what_the_credential_reaches(registers, world, token):
    a, b, c = world["a"], world["b"], world["c"]
    async with registers.client(world["a_token"]) as http:
        assert [s["urn"] for s in await all_schools(http)] == [a]
    async with registers.client(token(Role.SCHOOL, urns={a, b})) as http:
        assert [s["urn"] for s in await all_schools(http)] == sorted([a, b])
    for role in (Role.LA_OFFICER, Role.LA_SYSTEM):
        async with registers.client(token(role, la_code=TEST_LA)) as http:
            mine = await all_schools(http)
            assert {s["la_code"] for s in mine} == {TEST_LA}
            assert {a, b} <= {s["urn"] for s in mine} and c not in {s["urn"] for s in mine}
            assert await all_schools(http, la_code=OTHER_LA) == []
        async with registers.client(token(role, la_code=OTHER_LA)) as http:
            theirs = {s["urn"] for s in await all_schools(http)}
            assert c in theirs and not {a, b} & theirs
    async with registers.client(world["ops"]) as http:
        everything = [s["urn"] for s in await all_schools(http)]
        assert {a, b, c} <= set(everything) and everything == sorted(everything)
        assert len(everything) == len(set(everything))
        assert c in {s["urn"] for s in await all_schools(http, la_code=OTHER_LA)}


# ---------------------------------------------------------------- open endpoints


@pytest.mark.parametrize("path", ["/healthz", "/readyz", "/metrics", "/docs", "/openapi.json"])
async def test_operational_endpoints_need_no_token(registers, path):
    async with registers.client() as http:
        response = await http.get(path)
    assert response.status_code == 200, response.text
    if path == "/readyz":
        assert response.json() == {"status": "ready", "checks": {"database": "ok", "broker": "ok"}}
    elif path == "/metrics":
        assert response.headers["content-type"].startswith("text/plain")
        assert "# TYPE" in response.text
    elif path == "/docs":
        assert "swagger" in response.text.lower()
    elif path == "/openapi.json":
        paths = response.json()["paths"]
        assert "/v1/schools/{urn}/registers" in paths and "/v1/auth/token" in paths
    else:
        assert response.json() == {"status": "ok"}


# ---------------------------------------------------------------- the token endpoint


@pytest.fixture
async def sessions(database_url):
    engine = make_engine(database_url, pool_size=1)
    try:
        yield make_sessionmaker(engine)
    finally:
        await engine.dispose()


async def new_client(sessions, role: Role, urns=(), la_code: str | None = None) -> tuple[str, str]:
    async with sessions() as session, session.begin():
        client, secret = await service.create_client(session, f"test {role.value}", role, list(urns), la_code)
        return client.client_id, secret


async def exchange(registers, **kwargs: Any):
    async with registers.client() as http:
        return await http.post("/v1/auth/token", **kwargs)


def form(client_id: str, secret: str, grant_type: str = "client_credentials") -> dict[str, Any]:
    return {"data": {"grant_type": grant_type, "client_id": client_id, "client_secret": secret}}


async def test_client_credentials_token_posts_the_schools_register(registers, world, sessions, new_upn):
    a, upn = world["a"], new_upn()
    client_id, secret = await new_client(sessions, Role.SCHOOL, [a])
    response = await exchange(registers, **form(client_id, secret))
    assert response.status_code == 200, response.text
    issued = response.json()
    assert issued["token_type"] == "Bearer" and issued["expires_in"] == registers.settings.token_ttl_seconds
    async with registers.client(issued["access_token"]) as http:
        posted = await http.post(
            f"/v1/schools/{a}/registers", json={"date": TARGET, "session": "PM", "marks": [{"upn": upn, "code": "\\"}]}
        )
        assert posted.status_code == 201, posted.text
        stored = (await http.get(f"/v1/schools/{a}/registers/{TARGET}/PM")).json()
        assert [s["client"] for s in stored["submissions"]] == [client_id]
        assert_problem(await http.get(f"/v1/schools/{world['b']}"), 403, "forbidden")


async def test_http_basic_client_authentication_and_la_binding(registers, world, sessions):
    client_id, secret = await new_client(sessions, Role.LA_OFFICER, la_code=TEST_LA)
    response = await exchange(registers, data={"grant_type": "client_credentials"}, auth=(client_id, secret))
    assert response.status_code == 200, response.text
    async with registers.client(response.json()["access_token"]) as http:
        assert (await http.get(f"/v1/schools/{world['b']}/registers/{SEEDED}/AM")).status_code == 200
        assert_problem(await http.get(f"/v1/schools/{world['c']}"), 403, "forbidden")
        refused = await http.post(
            f"/v1/schools/{world['b']}/registers",
            json={"date": TARGET, "session": "AM", "marks": [{"upn": world["upn"][world["b"]], "code": "/"}]},
        )
        assert_problem(refused, 403, "forbidden")
    await assert_untouched(registers, world, world["b"])


async def test_wrong_unknown_and_revoked_clients_are_refused_alike(registers, world, sessions):
    client_id, secret = await new_client(sessions, Role.SCHOOL, [world["a"]])
    refusals = [
        await exchange(registers, **form(client_id, secret + "x")),
        await exchange(registers, **form("cl_0000000000000000", secret)),
        await exchange(registers, data={"grant_type": "client_credentials"}, auth=(client_id, "wrong")),
    ]
    assert (await exchange(registers, **form(client_id, secret))).status_code == 200
    async with sessions() as session, session.begin():
        await service.revoke_client(session, client_id)
    refusals.append(await exchange(registers, **form(client_id, secret)))
    details = set()
    for response in refusals:
        problem = assert_problem(response, 401, "invalid-client")
        assert "access_token" not in problem
        details.add(problem["detail"])
    assert len(details) == 1  # nothing tells an attacker which part was wrong


@pytest.mark.parametrize(
    ("request_kwargs", "status", "problem_type"),
    [
        pytest.param(form("cl_x", "s", grant_type="password"), 400, "unsupported-grant-type", id="password-grant"),
        pytest.param(
            form("cl_x", "s", grant_type="authorization_code"), 400, "unsupported-grant-type", id="code-grant"
        ),
        pytest.param({"data": {"grant_type": "client_credentials"}}, 400, "invalid-request", id="no-credentials"),
        pytest.param(
            {"data": {"grant_type": "client_credentials", "client_id": "cl_x"}}, 400, "invalid-request", id="no-secret"
        ),
        pytest.param({"data": {"client_id": "cl_x", "client_secret": "s"}}, 422, "invalid-request", id="no-grant-type"),
    ],
)
async def test_malformed_token_requests(registers, request_kwargs, status, problem_type):
    assert_problem(await exchange(registers, **request_kwargs), status, problem_type)


async def test_client_secret_is_stored_only_as_an_argon2_hash(world, sessions):
    client_id, secret = await new_client(sessions, Role.SCHOOL, [world["a"]])
    async with sessions() as session:
        stored = (await session.scalars(select(ApiClient).where(ApiClient.client_id == client_id))).one()
    assert stored.secret_hash.startswith("$argon2id$")
    assert secret not in stored.secret_hash
    assert PasswordHasher().verify(stored.secret_hash, secret)
    assert stored.revoked_at is None and stored.urns == [world["a"]] and stored.role == "school"


@pytest.mark.parametrize(
    ("role", "urns", "la_code", "problem_type"),
    [
        pytest.param(Role.SCHOOL, [], None, "invalid-client", id="school-without-urn"),
        pytest.param(Role.LA_OFFICER, [], None, "invalid-client", id="la-officer-without-la-code"),
        pytest.param(Role.SCHOOL, ["999991"], None, "school-not-found", id="school-not-registered"),
    ],
)
async def test_clients_need_a_complete_binding(sessions, role, urns, la_code, problem_type):
    with pytest.raises(Problem) as refused:
        await new_client(sessions, role, urns, la_code)
    assert refused.value.slug == problem_type
