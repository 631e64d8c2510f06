"""The AsyncAPI document: generated from the event models, checked in, complete."""

from __future__ import annotations

from pathlib import Path

from shared.asyncapi import DELIVERABLE_TOPICS, asyncapi_document, asyncapi_json
from shared.events import EVENT_TYPES

CHECKED_IN = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def test_checked_in_document_is_what_the_models_generate() -> None:
    assert CHECKED_IN.read_text() == asyncapi_json(), "run `attendance notifications asyncapi` and commit the result"


def test_every_event_type_has_a_message_on_its_topic_and_webhooks_carry_the_deliverable_ones() -> None:
    document = asyncapi_document()
    channels = document["channels"]
    for model in EVENT_TYPES.values():
        name = model.event_type.replace(".", "_")
        channel = channels[model.topic.replace(".", "_")]
        assert channel["address"] == model.topic
        assert name in channel["messages"]
        message = document["components"]["messages"][name]
        assert message["name"] == model.event_type
        payload = document["components"]["schemas"][message["payload"]["$ref"].rsplit("/", 1)[1]]
        assert {"id", "source", "type", "data"} <= set(payload["required"])
        assert (name in channels["webhook"]["messages"]) == (model.topic in DELIVERABLE_TOPICS)


def test_refs_resolve() -> None:
    document = asyncapi_document()
    text = asyncapi_json()
    for ref in {part.split('"')[0] for part in text.split('"$ref": "')[1:]}:
        node = document
        for step in ref.removeprefix("#/").split("/"):
            node = node[step]
        assert node, ref
