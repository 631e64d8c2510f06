"""Audit of reads: reading a named pupil's record leaves exactly one entry (who, which pupil and
school, what, when, the request id) in the service's own log, which the pupil's LA officers and
ops can read and nobody else can; a refused read leaves none."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
import pytest_asyncio

from shared.auth import Role
from shared.domain.upn import make_upn
from tests.conftest import eventually
from tests.integration.test_cme import admission, deletion, new_school, post

LA = "866"
REGISTER_DAY = "2025-11-03"


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def pupil(registers, thresholds, casework, cme, notifications, token) -> dict[str, Any]:
    """A pupil of a school in an LA of its own: one mark, a casework case with its Stage 1 letter,
    and an admission and deletion on the CME roll. Each record's path, for a school to read."""
    school = await new_school(registers, cme, token, lambda: "866001", la_code=LA)
    urn, upn = school["urn"], make_upn(int(LA), 2016, 25, 1)
    async with cme.client(school["token"]) as mis:  # on roll before the register shows the pupil
        admitted = await post(mis, f"/v1/schools/{urn}/admissions", admission(upn, date(2025, 9, 1)), 201)
    async with registers.client(school["token"]) as mis:
        body = {"date": REGISTER_DAY, "session": "AM", "marks": [{"upn": upn, "code": "/"}]}
        await post(mis, f"/v1/schools/{urn}/registers", body, 201)
    async with thresholds.client(school["token"]) as http:
        path = f"/v1/schools/{urn}/pupils/{upn}/attendance"

        async def figures_known() -> bool:
            return (await http.get(path)).status_code == 200

        await eventually(figures_known, "the thresholds service to know the school")
    async with casework.client(school["token"]) as http:
        case = await post(http, "/v1/cases", {"urn": urn, "upn": upn, "reason": "Concerns"}, 201)
    async with cme.client(school["token"]) as mis:
        deleted = await post(mis, f"/v1/schools/{urn}/deletions", deletion(upn, "died"), 201)
    async with notifications.client(school["token"]) as http:

        async def letter() -> list[dict[str, Any]]:
            items = (await http.get("/v1/letters", params={"case_id": case["id"], "status": "ready"})).json()["items"]
            return items

        [stage_1] = await eventually(letter, "the Stage 1 letter")
    return {
        "school": school,
        "upn": upn,
        "records": {
            "registers": f"/v1/schools/{urn}/pupils/{upn}/marks",
            "thresholds": f"/v1/schools/{urn}/pupils/{upn}/attendance",
            "casework": f"/v1/cases/{case['id']}",
            "cme": f"/v1/schools/{urn}/deletions/{deleted['id']}",
            "notifications": f"/v1/letters/{stage_1['id']}/document",
        },
        "admission": admitted,
    }


ENDPOINTS = {
    "registers": "GET /v1/schools/{urn}/pupils/{upn}/marks",
    "thresholds": "GET /v1/schools/{urn}/pupils/{upn}/attendance",
    "casework": "GET /v1/cases/{case_id}",
    "cme": "GET /v1/schools/{urn}/deletions/{deletion_id}",
    "notifications": "GET /v1/letters/{letter_id}/document",
}


async def reads_of(service, token: str, upn: str, **params: Any) -> list[dict[str, Any]]:
    async with service.client(token) as http:
        response = await http.get("/v1/audit/record-reads", params={"upn": upn, **params})
        assert response.status_code == 200, response.text
        return response.json()["items"]


@pytest.mark.parametrize("name", list(ENDPOINTS))
async def test_a_read_of_a_pupils_record_is_in_the_services_log(request, pupil, token, name):
    service = request.getfixturevalue(name)
    school, upn = pupil["school"], pupil["upn"]
    officer = token(Role.LA_OFFICER, la_code=LA)
    before = await reads_of(service, officer, upn)
    request_id = uuid.uuid4().hex
    started = datetime.now(UTC)
    async with service.client(school["token"]) as http:
        response = await http.get(pupil["records"][name], headers={"X-Request-ID": request_id})
        assert response.status_code == 200, response.text
        # Another school's credential is refused: nothing read, nothing recorded.
        async with service.client(token(Role.SCHOOL, urns={"866002"})) as other:
            assert (await other.get(pupil["records"][name])).status_code in (403, 404)

    after = await reads_of(service, officer, upn)
    new = [entry for entry in after if entry["id"] not in {e["id"] for e in before}]
    assert [{k: v for k, v in entry.items() if k not in ("id", "at")} for entry in new] == [
        {
            "reader": "test-school",
            "reader_role": "school",
            "reader_urns": [school["urn"]],
            "reader_la_code": None,
            "upn": upn,
            "urn": school["urn"],
            "la_code": LA,
            "endpoint": ENDPOINTS[name],
            "request_id": request_id,
        }
    ]
    at = datetime.fromisoformat(new[0]["at"])
    assert started - timedelta(seconds=5) <= at <= datetime.now(UTC)
    window = {"from": (at - timedelta(seconds=1)).isoformat(), "to": (at + timedelta(seconds=1)).isoformat()}
    assert new[0] in await reads_of(service, token(Role.OPS), upn, **window)
    assert new[0] not in await reads_of(service, officer, upn, to=at.isoformat())  # `to` is exclusive

    # Other LAs see nothing of it and may not ask for it; schools and LA systems may not read the log.
    assert await reads_of(service, token(Role.LA_OFFICER, la_code="867"), upn) == []
    async with service.client(token(Role.LA_OFFICER, la_code="867")) as http:
        assert (await http.get("/v1/audit/record-reads", params={"la_code": LA})).status_code == 403
    for refused in (school["token"], token(Role.LA_SYSTEM, la_code=LA)):
        async with service.client(refused) as http:
            response = await http.get("/v1/audit/record-reads", params={"upn": upn})
            assert response.status_code == 403 and response.headers["content-type"] == "application/problem+json"


async def test_a_look_up_narrowed_to_one_pupil_is_recorded_and_a_list_is_not(cme, pupil, token):
    officer = token(Role.LA_OFFICER, la_code=LA, subject="cme-officer-866")
    upn = pupil["upn"]
    before = {e["id"] for e in await reads_of(cme, officer, upn)}
    async with cme.client(officer) as http:
        assert (await http.get(f"/v1/pupils/{upn}/roll")).status_code == 200
        assert (await http.get(f"/v1/schools/{pupil['school']['urn']}/admissions")).status_code == 200
    new = [e for e in await reads_of(cme, officer, upn) if e["id"] not in before]
    # One entry per roll entry read (the admission and the deletion, same pupil and school: one).
    assert [(e["reader"], e["reader_role"], e["reader_la_code"], e["endpoint"]) for e in new] == [
        ("cme-officer-866", "la_officer", LA, "GET /v1/pupils/{upn}/roll")
    ]
