"""The hot-path encoder must produce what the pydantic models describe."""

import uuid
from datetime import UTC, date, datetime

import orjson
import pytest
from pydantic import ValidationError

from shared.events import EventEncoder, MarkAmended, MarkRecorded, make_event, parse_event

RECORDED = {
    "urn": "100001",
    "la_code": "801",
    "upn": "W801200025001",
    "date": date(2025, 11, 3),
    "session": "AM",
    "code": "L",
    "sub_code": None,
    "category": "P",
    "possible": True,
    "minutes_late": 12,
    "change_version": 3,
    "recorded_at": datetime(2025, 11, 3, 9, 40, tzinfo=UTC),
    "link": "http://127.0.0.1:8001/v1/schools/100001/pupils/W801200025001/marks",
}
AMENDED = RECORDED | {
    "code": "U",
    "category": "UA",
    "previous_code": "L",
    "previous_sub_code": None,
    "previous_category": "P",
    "previous_possible": True,
    "amendment_id": 9,
}


@pytest.mark.parametrize(("model", "fields"), [(MarkRecorded, RECORDED), (MarkAmended, AMENDED)])
def test_fast_encoder_matches_the_model(model, fields):
    at = datetime(2025, 11, 3, 9, 41, tzinfo=UTC)
    fast = parse_event(EventEncoder("registers", at).encode(model, fields, subject=fields["upn"]))
    slow = parse_event(make_event("registers", model(**fields), subject=fields["upn"], time=at).model_dump_json())
    assert fast.model_dump(exclude={"id"}) == slow.model_dump(exclude={"id"})
    assert fast.type == model.event_type and fast.dataschema.endswith(f"{model.event_type}:v1")


def test_encoder_merges_common_fields_and_gives_every_event_its_own_uuid():
    at = datetime(2025, 11, 3, 9, 41, tzinfo=UTC)
    common = {k: RECORDED[k] for k in ("urn", "la_code", "date", "session", "recorded_at")}
    per_mark = {k: v for k, v in RECORDED.items() if k not in common}
    encoder = EventEncoder("registers", at, common)
    events = [parse_event(encoder.encode(MarkRecorded, per_mark, subject="x")) for _ in range(3)]
    assert all(e.data == MarkRecorded(**RECORDED) for e in events)
    ids = [e.id for e in events]
    assert len(set(ids)) == 3 and all(isinstance(i, uuid.UUID) and i.version == 4 for i in ids)
    other = parse_event(EventEncoder("registers", at, common).encode(MarkRecorded, per_mark))
    assert other.id not in ids  # a second encoder draws a fresh random prefix


def test_parse_rejects_fields_the_model_does_not_know():
    raw = orjson.loads(EventEncoder("registers", datetime.now(UTC)).encode(MarkRecorded, RECORDED))
    raw["data"]["pupil_name"] = "must never be on the bus"
    with pytest.raises(ValidationError):
        parse_event(orjson.dumps(raw))


def test_parse_rejects_unknown_types_and_non_objects():
    with pytest.raises(ValueError, match="unknown event type"):
        parse_event(b'{"type": "attendance.nothing"}')
    with pytest.raises(ValueError, match="JSON object"):
        parse_event(b"[1, 2]")


def test_parse_reads_the_envelope_type_whatever_comes_first_in_the_text():
    """The parser guesses the model from the first "type" in the text; a guess that names another
    field's value, or another event type, must still give the envelope's own type and data."""
    event = orjson.loads(EventEncoder("registers", datetime.now(UTC)).encode(MarkAmended, AMENDED))
    for decoy in ("attendance.mark.recorded", "attendance.register.taken", "not.an.event"):
        reordered = {"extensions": {"type": decoy}, **event}  # an unknown top-level field comes first
        parsed = parse_event(orjson.dumps(reordered))
        assert parsed.type == "attendance.mark.amended" and isinstance(parsed.data, MarkAmended)
    spaced = orjson.dumps(event).replace(b'"type":', b'"type" :  ')
    assert parse_event(spaced).data == MarkAmended(**AMENDED)
    as_text = orjson.dumps(event).decode()
    assert parse_event(as_text).data == MarkAmended(**AMENDED)
