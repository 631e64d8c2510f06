"""Notifications through HTTP, the broker and real receivers: signed webhooks to an HTTP server on
loopback, in order per pupil; retries, dead letters, redelivery and replay against a receiver that
fails, times out and recovers; secret rotation; email through SMTP; the ledger; access."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi import FastAPI, Request
from fastapi.responses import Response

from shared.asyncapi import asyncapi_document
from shared.auth import Role
from shared.devstack import free_port
from shared.webhooks import WebhookVerificationError, signed_headers, verify
from tests.conftest import eventually, start_service
from tests.integration.test_cme import admission, deletion, new_school, post

_las = itertools.count(820)


class Receiver:
    """An LA system's endpoint: records what arrives; can fail, hang or recover on demand."""

    def __init__(self) -> None:
        self.received: list[tuple[dict[str, str], bytes]] = []
        self.failures: list[dict[str, str]] = []
        self.mode = "ok"  # ok | fail | hang
        self.port = free_port()
        self.app = FastAPI()

        @self.app.post("/hook")
        async def hook(request: Request) -> Response:
            headers = dict(request.headers)
            body = await request.body()
            if self.mode == "fail":
                self.failures.append(headers)
                return Response(status_code=503)
            if self.mode == "hang":
                self.failures.append(headers)
                await asyncio.sleep(3)
            self.received.append((headers, body))
            return Response(status_code=204)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def events(self) -> list[dict[str, Any]]:
        return [json.loads(body) for _, body in self.received]


@contextlib.asynccontextmanager
async def receiver() -> AsyncIterator[Receiver]:
    target = Receiver()
    server, task = await start_service(target.app, target.port)
    try:
        yield target
    finally:
        server.should_exit = True
        await task


@pytest.fixture
async def la(registers, cme, token, new_urn) -> dict[str, Any]:
    """An LA of its own (so that only this test's events reach its subscribers), with a school."""
    code = str(next(_las))
    school = await new_school(registers, cme, token, new_urn, la_code=code)
    return {"code": code, "school": school, "system": token(Role.LA_SYSTEM, la_code=code, subject=f"system-{code}")}


async def subscribe(notifications, la: dict[str, Any], url: str, types: list[str] | None = None) -> dict[str, Any]:
    async with notifications.client(la["system"]) as http:
        body = {"url": url, "event_types": types or ["roll.*"]}
        return await post(http, "/v1/subscriptions", body, 201)


async def roll_changes(cme, la: dict[str, Any], upns: list[str]) -> None:
    """Per pupil, in order: admitted (revision 1), amended (revision 2), deleted."""
    school = la["school"]
    async with cme.client(school["token"]) as mis:
        for upn in upns:
            await post(mis, f"/v1/schools/{school['urn']}/admissions", admission(upn), 201)
        for upn in upns:
            await post(mis, f"/v1/schools/{school['urn']}/admissions", admission(upn, nc_year="6"), 200)
        for upn in upns:
            await post(mis, f"/v1/schools/{school['urn']}/deletions", deletion(upn, "died"), 201)


def per_pupil(events: list[dict[str, Any]]) -> dict[str, list[tuple[str, int]]]:
    order: dict[str, list[tuple[str, int]]] = {}
    for event in events:
        order.setdefault(event["subject"], []).append((event["type"], event["data"]["revision"]))
    return order


EXPECTED_ORDER = [("roll.pupil.admitted", 1), ("roll.pupil.admitted", 2), ("roll.pupil.deleted", 1)]


async def ledger(notifications, la: dict[str, Any], **filters: Any) -> list[dict[str, Any]]:
    async with notifications.client(la["system"]) as http:
        response = await http.get("/v1/deliveries", params={"limit": 1000, **filters})
        assert response.status_code == 200, response.text
        return response.json()["items"]


async def test_signed_deliveries_arrive_in_order_per_pupil(notifications, cme, la, new_upn):
    upns = [new_upn() for _ in range(4)]
    async with receiver() as hooks:
        created = await subscribe(notifications, la, hooks.url)
        secret = created["secret"]
        assert secret.startswith("whsec_")
        await roll_changes(cme, la, upns)
        await eventually(lambda: _count(hooks, 12), "12 deliveries")
        assert per_pupil(hooks.events()) == {upn: EXPECTED_ORDER for upn in upns}
        for headers, body in hooks.received:
            event = verify(body, headers, secret)
            assert headers["webhook-id"] == event["id"]
            assert set(event["data"]) <= {
                "urn",
                "la_code",
                "upn",
                "revision",
                "link",
                "admission_id",
                "admitted_on",
                "nc_year",
                "dual_registration",
                "source",
                "deletion_id",
                "deleted_on",
                "ground",
                "ground_code",
                "destination_known",
                "destination_urn",
                "destination_la_code",
            }  # thin: no date of birth, characteristics, names or addresses
        headers, body = hooks.received[0]
        with pytest.raises(WebhookVerificationError):
            verify(body.replace(b'"revision":1', b'"revision":9'), headers, secret)  # tampered
        with pytest.raises(WebhookVerificationError):
            verify(body, headers, "whsec_" + "A" * 43)  # another secret
        stale = signed_headers(
            [secret], headers["webhook-id"], body.decode(), datetime.now(UTC) - timedelta(minutes=10)
        )
        with pytest.raises(WebhookVerificationError):
            verify(body, stale, secret)  # a replayed old delivery
    delivered = await ledger(notifications, la, subscription_id=created["id"])
    assert len(delivered) == 12 and {d["status"] for d in delivered} == {"delivered"}
    assert all(d["attempts"] == 1 for d in delivered)


async def _count(hooks: Receiver, n: int) -> bool:
    assert len(hooks.received) <= n, f"more deliveries than events: {len(hooks.received)}"
    return len(hooks.received) == n


async def test_failing_subscriber_is_retried_then_dead_lettered_and_never_delays_others(
    notifications, cme, la, new_upn
):
    upn = new_upn()
    async with receiver() as down, receiver() as healthy:
        down.mode = "fail"
        failing = await subscribe(notifications, la, down.url)
        await subscribe(notifications, la, healthy.url)
        await roll_changes(cme, la, [upn])
        await eventually(lambda: _count(healthy, 3), "the healthy subscriber's deliveries", timeout=10)

        async def dead() -> list[dict[str, Any]]:
            rows = await ledger(notifications, la, subscription_id=failing["id"], status="dead")
            return sorted(rows, key=lambda r: r["id"]) if len(rows) == 3 else []

        rows = await eventually(dead, "the deliveries to be dead-lettered", timeout=20)
        assert [r["attempts"] for r in rows] == [4, 4, 4] and {r["last_status_code"] for r in rows} == {503}
        # Each event was tried to the end of its budget before the pupil's next one: in order.
        tried = [headers["webhook-id"] for headers in down.failures]
        assert tried == [str(r["event_id"]) for r in rows for _ in range(4)]
        async with notifications.client(la["system"]) as http:
            detail = (await http.get(f"/v1/deliveries/{rows[0]['id']}")).json()
            assert [a["outcome"] for a in detail["attempt_log"]] == ["failed"] * 4
            gaps = [
                (datetime.fromisoformat(b["at"]) - datetime.fromisoformat(a["at"])).total_seconds()
                for a, b in itertools.pairwise(detail["attempt_log"])
            ]
            assert gaps[2] >= 0.1  # backing off: the third retry waits at least half of 0.05 s x 2^2
            down.mode = "ok"
            for row in rows:
                response = await http.post(f"/v1/deliveries/{row['id']}/redeliver")
                assert response.status_code == 202, response.text
        await eventually(lambda: _count(down, 3), "every delivery once the subscriber recovered", timeout=20)
        assert per_pupil(down.events()) == {upn: EXPECTED_ORDER}


async def test_hanging_subscriber_times_out_and_recovers_with_nothing_lost(notifications, cme, la, new_upn):
    upns = [new_upn(), new_upn()]
    async with receiver() as slow, receiver() as healthy:
        slow.mode = "hang"
        created = await subscribe(notifications, la, slow.url)
        await subscribe(notifications, la, healthy.url)
        await roll_changes(cme, la, upns)
        # The other subscriber has everything while the slow one has not answered once.
        await eventually(lambda: _count(healthy, 6), "the healthy subscriber's deliveries", timeout=3)
        assert slow.received == []

        async def timed_out() -> bool:
            rows = await ledger(notifications, la, subscription_id=created["id"])
            return any("Timeout" in (r["last_error"] or "") for r in rows)

        await eventually(timed_out, "an attempt to time out", timeout=10)
        slow.mode = "ok"

        async def all_delivered() -> bool:
            rows = await ledger(notifications, la, subscription_id=created["id"])
            return len(rows) == 6 and all(r["status"] == "delivered" for r in rows)

        await eventually(all_delivered, "every delivery after recovery", timeout=30)
        # A hung attempt may have reached the receiver before it gave up: receivers dedupe by webhook-id.
        unique = {headers["webhook-id"]: json.loads(body) for headers, body in slow.received}
        assert per_pupil(sorted(unique.values(), key=lambda e: e["time"])) == {u: EXPECTED_ORDER for u in upns}


async def test_replay_and_secret_rotation(notifications, cme, la, new_upn):
    async with receiver() as hooks:
        created = await subscribe(notifications, la, hooks.url)
        old_secret = created["secret"]
        started = datetime.now(UTC)
        await roll_changes(cme, la, [new_upn()])
        await eventually(lambda: _count(hooks, 3), "3 deliveries")
        first_ids = [h["webhook-id"] for h, _ in hooks.received]
        async with notifications.client(la["system"]) as http:
            rotated = await post(http, f"/v1/subscriptions/{created['id']}/secret/rotate", {}, 200)
            replayed = await post(
                http, f"/v1/subscriptions/{created['id']}/replay", {"since": started.isoformat()}, 202
            )
            assert replayed == {"queued": 3}
        await eventually(lambda: _count(hooks, 6), "the replayed deliveries")
        assert [h["webhook-id"] for h, _ in hooks.received[3:]] == first_ids
        for headers, body in hooks.received[3:]:
            assert len(headers["webhook-signature"].split(" ")) == 2
            verify(body, headers, old_secret)  # receivers not yet switched keep working
            verify(body, headers, rotated["secret"])
        async with notifications.client(la["system"]) as http:
            await post(http, f"/v1/subscriptions/{created['id']}/secret/rotate", {"previous_valid_seconds": 0}, 200)
            newest = (await http.get(f"/v1/subscriptions/{created['id']}")).json()
            assert "secret" not in newest  # shown once


async def test_email_to_officers_through_smtp(notifications, cme, la, new_upn, token, mailbox):
    officer = token(Role.LA_OFFICER, la_code=la["code"], subject="cme-officer")
    async with notifications.client(officer) as http:
        body = {"channel": "email", "email": "cme.officer@example.gov.uk", "event_types": ["cme.case.opened"]}
        created = await post(http, "/v1/subscriptions", body, 201)
        assert created["secret"] is None
    upn = new_upn()
    school = la["school"]
    async with cme.client(school["token"]) as mis:
        await post(mis, f"/v1/schools/{school['urn']}/admissions", admission(upn), 201)
        await post(mis, f"/v1/schools/{school['urn']}/deletions", deletion(upn, "moved_away"), 201)

    async def mailed() -> list[Any]:
        return [m for m in mailbox.messages if upn in m["Subject"]]

    [message] = await eventually(mailed, "the officer's email")
    assert message["To"] == "cme.officer@example.gov.uk"
    assert "cme case opened" in message["Subject"]
    text = message.get_content()
    assert "deleted_without_destination" in text and "/v1/cme/cases/" in text

    async def recorded() -> list[dict[str, Any]]:
        rows = await ledger(notifications, {"system": officer}, subscription_id=created["id"])
        return rows if rows and rows[0]["status"] != "pending" else []

    [row] = await eventually(recorded, "the ledger to record the email")  # written just after SMTP accepts
    assert (row["status"], row["last_status_code"]) == ("delivered", 250)


async def test_worklist_digest_by_email(notifications, cme, la, new_upn, token, mailbox):
    officer = token(Role.LA_OFFICER, la_code=la["code"], subject="cme-officer")
    upn = new_upn()
    school = la["school"]
    async with cme.client(school["token"]) as mis:
        await post(mis, f"/v1/schools/{school['urn']}/admissions", admission(upn), 201)
        await post(mis, f"/v1/schools/{school['urn']}/deletions", deletion(upn, "moved_away"), 201)
    async with notifications.client(officer) as http:
        body = {"channel": "email", "email": "ewo@example.gov.uk", "digest": True}
        created = await post(http, "/v1/subscriptions", body, 201)
        assert (created["digest"], created["event_types"]) == (True, [])
        queued = await post(http, f"/v1/subscriptions/{created['id']}/digest", {}, 202)
        assert queued["event_type"] == "notifications.digest"

    async def mailed() -> list[Any]:
        return [m for m in mailbox.messages if m["To"] == "ewo@example.gov.uk" and la["code"] in m["Subject"]]

    [message] = await eventually(mailed, "the digest email")
    assert message["Subject"].startswith(f"[Attendance] Worklist for LA {la['code']} on ")
    text = message.get_content()
    assert f"- cme_case: pupil {upn} at school {school['urn']}" in text
    assert "Casework clocks due by" in text
    async with notifications.client(la["system"]) as http:
        no_digest = await post(
            http, "/v1/subscriptions", {"url": "http://127.0.0.1:9/h", "event_types": ["cme.*"]}, 201
        )
        assert (await http.post(f"/v1/subscriptions/{no_digest['id']}/digest")).status_code == 409
        webhook_digest = {"url": "http://127.0.0.1:9/h", "digest": True}
        assert (await http.post("/v1/subscriptions", json=webhook_digest)).status_code == 422


async def test_subscriptions_are_scoped_and_validated(notifications, la, token, new_urn):
    other = token(Role.LA_SYSTEM, la_code="899")
    school = token(Role.SCHOOL, urns={la["school"]["urn"]})
    officer = token(Role.LA_OFFICER, la_code=la["code"])
    good = {"url": "http://127.0.0.1:9/hook", "event_types": ["cme.*"]}
    async with notifications.client(la["system"]) as http:
        created = await post(http, "/v1/subscriptions", good, 201)
        bad_type = await post(http, "/v1/subscriptions", good | {"event_types": ["cme.nothing"]}, 422)
        assert "no deliverable event type matches" in bad_type["errors"][0]["message"]
        assert (await http.post("/v1/subscriptions", json=good | {"url": "ftp://x"})).status_code == 422
        assert (await http.post("/v1/subscriptions", json=good | {"urns": ["12"]})).status_code == 422
        assert (
            await http.post("/v1/subscriptions", json={"channel": "email", "email": "nope", "event_types": ["cme.*"]})
        ).status_code == 422
    async with notifications.client(school) as http:
        assert (await http.post("/v1/subscriptions", json=good)).status_code == 403
    async with notifications.client(officer) as http:
        assert (await http.post("/v1/subscriptions", json=good)).status_code == 403  # endpoints are for LA systems
    async with notifications.client(other) as http:
        assert (await http.get(f"/v1/subscriptions/{created['id']}")).status_code == 404
        assert (await http.delete(f"/v1/subscriptions/{created['id']}")).status_code == 404
        assert (await http.get("/v1/deliveries", params={"subscription_id": created["id"]})).json()["items"] == []
    async with notifications.client(la["system"]) as http:
        assert (await http.delete(f"/v1/subscriptions/{created['id']}")).status_code == 204
        assert (await http.get(f"/v1/subscriptions/{created['id']}")).status_code == 404
    async with notifications.client() as anonymous:
        assert (await anonymous.get("/v1/subscriptions")).status_code == 401
        served = await anonymous.get("/v1/asyncapi.json")
        assert served.status_code == 200 and served.json() == asyncapi_document()


async def test_webhook_urls_the_dispatcher_cannot_post_to_are_refused(notifications, la):
    """Stored, each failed its delivery attempts with an error the dispatcher does not catch: no
    attempt was recorded, so the delivery was never dead-lettered and the pupil's later events waited
    behind it for good (and, where only https endpoints are allowed, the bracketless IPv6 was a 500)."""
    good = {"url": "http://127.0.0.1:9/hook", "event_types": ["cme.*"]}
    async with notifications.client(la["system"]) as http:
        for url in ("http://127.0.0.1:99999/hook", "https://[::1/hook", "https://hooks\x01.example.org/hook"):
            response = await http.post("/v1/subscriptions", json=good | {"url": url})
            assert response.status_code == 422, (url, response.text)
            assert response.json()["errors"][0]["location"] == "body", url
        assert (await http.get("/v1/subscriptions")).json() == []
