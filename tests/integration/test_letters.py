"""Stage letters: a case opened from an alert asks for its Stage 1 letter, rendered with the
pupil's figures from the thresholds service (HTML and PDF, the LA's template version), and posting
it records the evidence on the case."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from shared.auth import Role
from shared.domain.calendar import academic_year, academic_year_bounds
from shared.time import school_today
from tests.conftest import eventually
from tests.integration.test_casework import open_case
from tests.integration.test_cme import new_school, post, school_days

# The first Monday of this school year (the letter reports the year to date); pytest runs after
# mid-September in practice, when ten school days of it have passed.
_september = academic_year_bounds(academic_year(school_today()))[0]
YEAR_START = _september + timedelta(days=(7 - _september.weekday()) % 7)
STAGE_1_TEMPLATE = (
    '{% extends "_base.html.j2" %}{% block body %}<p>Custom Stage 1 wording for LA {{ la_code }}.</p>{% endblock %}'
)


async def test_stage_letter_rendered_with_figures_and_recorded_as_evidence(
    registers, thresholds, casework, cme, notifications, token, new_urn, new_upn
):
    la = "840"
    school = await new_school(registers, cme, token, new_urn, la_code=la)
    officer = token(Role.LA_OFFICER, la_code=la)
    async with notifications.client(officer) as http:
        bad = await http.put(f"/v1/letter-templates/{la}/stage_1", json={"body": "{{ pupil_name }}"})
        assert bad.status_code == 422 and "'pupil_name' is undefined" in bad.json()["detail"]
        unsafe = await http.put(f"/v1/letter-templates/{la}/stage_1", json={"body": "{{ figures.__class__ }}"})
        assert unsafe.status_code == 422
        # The PDF's font prints Latin-1 only: such a template gave HTML, then no letter ever.
        unprintable = await http.put(f"/v1/letter-templates/{la}/stage_1", json={"body": "<p>\u0175</p>"})
        assert unprintable.status_code == 422 and "helvetica" in unprintable.json()["detail"]
        put = await http.put(f"/v1/letter-templates/{la}/stage_1", json={"body": STAGE_1_TEMPLATE})
        assert put.status_code == 200 and put.json()["version"] == 1, put.text
        assert (await http.put("/v1/letter-templates/801/stage_1", json={"body": STAGE_1_TEMPLATE})).status_code == 403

    upn = new_upn()
    # This school year (the letter reports the year to date): 2 days absent, then 8 days present.
    async with registers.client(school["token"]) as mis:
        for index, day in enumerate(school_days(YEAR_START, 10)):
            for session, present in (("AM", "/"), ("PM", "\\")):
                body = {
                    "date": day.isoformat(),
                    "session": session,
                    "marks": [{"upn": upn, "code": "O" if index < 2 else present}],
                }
                response = await mis.post(f"/v1/schools/{school['urn']}/registers", json=body)
                assert response.status_code == 201, response.text

    async def ready() -> list[dict[str, Any]]:
        async with notifications.client(school["token"]) as http:
            items = (await http.get("/v1/letters", params={"status": "ready"})).json()["items"]
        return [i for i in items if i["upn"] == upn]

    [letter] = await eventually(ready, "the Stage 1 letter to be rendered", timeout=30)
    assert (letter["kind"], letter["template_version"]) == ("stage_1", 1)
    async with notifications.client(school["token"]) as http:
        html = (await http.get(f"/v1/letters/{letter['id']}/document", params={"format": "html"})).text
        pdf = await http.get(f"/v1/letters/{letter['id']}/document")
    assert f"Custom Stage 1 wording for LA {la}" in html and upn in html
    # The thresholds service's figures when the case opened (the alert fires part-way through the
    # registers): consistent with each other, all unauthorised absence.
    cells = re.findall(r"<tr><td[^>]*>([^<]+)</td><td[^>]*>([^<]+)</td></tr>", html)
    figures = {label.split(" (")[0]: value for label, value in cells}
    possible, attended = int(figures["Sessions possible"]), int(figures["Sessions attended"])
    unauthorised = int(figures["Unauthorised absence"])
    assert possible == attended + unauthorised and 1 <= unauthorised <= 4, figures
    assert figures["Attendance"] == f"{attended / possible * 100:.1f}%"
    assert pdf.headers["content-type"] == "application/pdf" and pdf.content.startswith(b"%PDF-")

    async with notifications.client(school["token"]) as http:
        sent = await post(http, f"/v1/letters/{letter['id']}/sent", {"posted_on": "2025-11-20"}, 200)
        assert sent["status"] == "sent" and sent["case_action_id"] is not None
        again = await http.post(f"/v1/letters/{letter['id']}/sent", json={"posted_on": "2025-11-20"})
        assert again.status_code == 409
    async with casework.client(officer) as http:
        timeline = (await http.get(f"/v1/cases/{letter['case_id']}/timeline")).json()
        bundle = (await http.get(f"/v1/cases/{letter['case_id']}/evidence")).json()
    letters_sent = [e for e in timeline if e["kind"] == "letter_sent"]
    assert [(e["details"]["letter"], e["details"]["posted_on"], e["by"]) for e in letters_sent] == [
        ("stage_1", "2025-11-20", "test-school")
    ]
    assert {c["kind"]: c["status"] for c in bundle["clocks"]}.get("stage_1_letter") == "met"

    other_school = token(Role.SCHOOL, urns={"999998"})
    async with notifications.client(other_school) as http:
        assert (await http.get(f"/v1/letters/{letter['id']}")).status_code == 404


async def test_a_letter_its_template_cannot_print_fails_alone(
    registers, thresholds, casework, cme, notifications, token, new_urn, new_upn
):
    """Rendering ran a batch of letters in one transaction: one that failed rolled it back, again at
    every poll, and no letter of any LA was rendered any more."""
    # Prints its sample (120 sessions possible), not a letter with other figures.
    template = (
        '{% extends "_base.html.j2" %}'
        "{% block body %}{% if figures.possible_sessions != 120 %}\u0175{% endif %}{% endblock %}"
    )
    letters: dict[str, dict[str, Any]] = {}
    for la in ("841", "842"):
        school = await new_school(registers, cme, token, new_urn, la_code=la)
        officer = token(Role.LA_OFFICER, la_code=la)
        async with thresholds.client(officer) as http:

            async def known(http: Any = http, urn: str = school["urn"]) -> bool:
                return (await http.get(f"/v1/schools/{urn}/attendance")).status_code == 200

            await eventually(known, f"school {school['urn']} to reach thresholds")
        if la == "841":
            async with notifications.client(officer) as http:
                put = await http.put(f"/v1/letter-templates/{la}/stage_1", json={"body": template})
                assert put.status_code == 200, put.text
        async with casework.client(officer) as http:
            await open_case(http, school["urn"], new_upn())
        async with notifications.client(officer) as http:

            async def asked(http: Any = http) -> list[dict[str, Any]]:
                return (await http.get("/v1/letters")).json()["items"]

            [letters[la]] = await eventually(asked, f"LA {la}'s Stage 1 letter")

    async def settled() -> dict[str, dict[str, Any]]:
        found = {}
        for la, letter in letters.items():
            async with notifications.client(token(Role.LA_OFFICER, la_code=la)) as http:
                found[la] = (await http.get(f"/v1/letters/{letter['id']}")).json()
        return found if all(f["status"] != "pending" for f in found.values()) else {}

    found = await eventually(settled, "both letters rendered or failed", timeout=30)
    assert (found["841"]["status"], found["842"]["status"]) == ("failed", "ready")
    assert "helvetica" in found["841"]["last_error"]
