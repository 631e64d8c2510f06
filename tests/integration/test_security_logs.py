"""No personal data in logs: a realistic flow through every service (registers with comments,
amendments by named staff, admissions with dates of birth, deletion returns with names and
addresses, a CME case and its enquiries, casework evidence, a stage letter rendered, read and
posted) while every log line is captured; none may carry a UPN, a name, a date of birth, an
address, a phone number or a comment used in it."""

from __future__ import annotations

import logging
from datetime import date
from typing import Any

from shared.auth import Role
from shared.domain.upn import make_upn
from tests.conftest import eventually
from tests.integration.test_cme import admission, deletion, new_school, post

LA = "868"
PUPIL, LEAVER = make_upn(int(LA), 2015, 25, 1), make_upn(int(LA), 2015, 25, 2)
PERSONAL = {
    "pupil name": "Tallulah Featherstonehaugh",
    "parent name": "Ignatius Featherstonehaugh",
    "staff name": "Persephone Okonkwo-Bright",
    "officer name": "Bartholomew Quince",
    "address": "17 Wisteria Crescent, Lowbridge",
    "new address": "Flat 9, 44 Marigold Row, Upminster",
    "date of birth": "2015-07-19",
    "phone": "07700 900461",
    "register comment": "Arrived late: said the car broke down on the ring road",
    "amendment reason": "Letter from Dr Abernathy about the hospital visit",
    "case notes": "Neighbours say the family moved to the coast",
    "enquiry notes": "Nobody answered at the flat; curtains drawn",
    "evidence summary": "Spoke to Ignatius about the bus pass",
}


async def realistic_flow(registers, thresholds, casework, cme, notifications, token) -> None:
    school = await new_school(registers, cme, token, lambda: "868001", la_code=LA)
    urn, mis_token = school["urn"], school["token"]
    officer = token(Role.LA_OFFICER, la_code=LA, subject="officer-868")
    dob = date.fromisoformat(PERSONAL["date of birth"])
    async with cme.client(mis_token) as mis:
        for upn in (PUPIL, LEAVER):
            body = admission(upn, date(2025, 9, 1), date_of_birth=dob.isoformat(), characteristics={"fsm": True})
            await post(mis, f"/v1/schools/{urn}/admissions", body, 201)
    async with registers.client(mis_token) as mis:
        taken_by = {"name": PERSONAL["staff name"], "position": "Class teacher"}
        marks = [
            {"upn": PUPIL, "code": "L", "minutes_late": 20, "comment": PERSONAL["register comment"]},
            {"upn": LEAVER, "code": "O"},
        ]
        body = {"date": "2025-11-03", "session": "AM", "taken_by": taken_by, "marks": marks}
        await post(mis, f"/v1/schools/{urn}/registers", body, 201)
        refused = {**body, "marks": [{**marks[0], "code": "?!"}]}  # refused whole, comment and all
        assert (await mis.post(f"/v1/schools/{urn}/registers", json=refused)).status_code == 422
        amendment = {"code": "M", "reason": PERSONAL["amendment reason"], "amended_by": taken_by}
        await post(mis, f"/v1/schools/{urn}/marks/{PUPIL}/2025-11-03/AM/amendments", amendment, 201)
        assert (await mis.get(f"/v1/schools/{urn}/pupils/{PUPIL}/marks")).status_code == 200

    async with thresholds.client(mis_token) as http:
        figures = f"/v1/schools/{urn}/pupils/{PUPIL}/attendance"

        async def figures_known() -> bool:
            return (await http.get(figures)).status_code == 200

        await eventually(figures_known, "the pupil's figures")

    async with cme.client(mis_token) as mis:
        returned = {
            "pupil_name": PERSONAL["pupil name"],
            "pupil_address": PERSONAL["address"],
            "parents": [{"name": PERSONAL["parent name"], "address": PERSONAL["address"]}],
            "emergency_phone": PERSONAL["phone"],
        }
        destination = {"address": PERSONAL["new address"]}
        body = deletion(LEAVER, "died", return_details=returned, destination=destination)
        deleted = await post(mis, f"/v1/schools/{urn}/deletions", body, 201)
        assert (await mis.get(f"/v1/schools/{urn}/deletions/{deleted['id']}")).status_code == 200
        case = await post(mis, "/v1/cme/cases", {"upn": PUPIL, "urn": urn, "notes": PERSONAL["case notes"]}, 201)
    async with cme.client(officer) as http:
        enquiry = {
            "made_on": "2025-11-05",
            "officer": PERSONAL["officer name"],
            "method": "home_visit",
            "outcome": "no_response",
            "notes": PERSONAL["enquiry notes"],
        }
        await post(http, f"/v1/cme/cases/{case['id']}/enquiries", enquiry, 201)
        assert (await http.get(f"/v1/pupils/{LEAVER}/roll")).status_code == 200

    async with casework.client(mis_token) as http:
        opened = await post(http, "/v1/cases", {"urn": urn, "upn": PUPIL, "reason": PERSONAL["case notes"]}, 201)
        contact = {
            "kind": "contact",
            "occurred_on": "2025-11-06",
            "details": {"method": "call", "with_whom": "Parent", "summary": PERSONAL["evidence summary"]},
        }
        await post(http, f"/v1/cases/{opened['id']}/actions", contact, 201)
        assert (await http.get(f"/v1/cases/{opened['id']}/evidence", params={"format": "html"})).status_code == 200

    async with notifications.client(mis_token) as http:

        async def letter() -> list[dict[str, Any]]:
            params = {"case_id": opened["id"], "status": "ready"}
            return (await http.get("/v1/letters", params=params)).json()["items"]

        [stage_1] = await eventually(letter, "the Stage 1 letter")
        assert (await http.get(f"/v1/letters/{stage_1['id']}/document")).status_code == 200
        await post(http, f"/v1/letters/{stage_1['id']}/sent", {"posted_on": "2025-11-07"}, 200)


async def test_no_personal_data_in_any_log_line(
    registers, thresholds, casework, cme, notifications, token, capsys, caplog
):
    caplog.set_level(logging.WARNING)  # what the services let through from libraries (shared.observability)
    await realistic_flow(registers, thresholds, casework, cme, notifications, token)
    out, err = capsys.readouterr()
    logged = "\n".join([out, err, caplog.text])
    # The capture works: the flow's requests are in it, by route.
    for route in ("/v1/schools/{urn}/deletions", "/v1/letters/{letter_id}/sent", "/v1/cme/cases/{case_id}/enquiries"):
        assert f'"route": "{route}"' in logged
    leaks = {
        what: value for what, value in {**PERSONAL, "UPN": PUPIL, "leaver's UPN": LEAVER}.items() if value in logged
    }
    assert not leaks, f"personal data in the logs: {leaks}"
