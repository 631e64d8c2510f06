from datetime import date

from shared.events import MARKS_TOPIC
from tests.conftest import read_events


async def test_post_register_then_read_back(registers, school, new_upn):
    upns = [new_upn() for _ in range(3)]
    body = {"date": "2025-11-03", "session": "AM", "marks": [{"upn": u, "code": "/"} for u in upns]}
    async with registers.client(school["token"]) as http:
        r = await http.post(f"/v1/schools/{school['urn']}/registers", json=body)
        assert r.status_code == 201, r.text
        assert r.json()["new"] == 3
        stored = await http.get(f"/v1/schools/{school['urn']}/registers/2025-11-03/AM")
        assert [m["upn"] for m in stored.json()["marks"]] == sorted(upns)
    events = await read_events(
        registers.settings.kafka_bootstrap_servers, MARKS_TOPIC, lambda e: e.data.urn == school["urn"], 3
    )
    assert sorted(e.data.upn for e in events) == sorted(upns)
    assert all(e.data.date == date(2025, 11, 3) for e in events)
