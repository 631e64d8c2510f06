"""The AsyncAPI 3.0 document of every topic and webhook, generated from the event models in
`shared.events` (the single source): served by the notifications service and checked in as
`docs/asyncapi.json`, which a test keeps equal to what this module generates."""

from __future__ import annotations

import json
from typing import Any

from pydantic.json_schema import models_json_schema

from shared.events import EVENT_TYPES, CloudEvent, EventData

# What the notifications service delivers to webhook and email subscribers.
DELIVERABLE_TOPICS = ("attendance.alerts.v1", "casework.escalations.v1", "roll.changes.v1", "cme.events.v1")

_WEBHOOK_HEADERS = {
    "type": "object",
    "required": ["webhook-id", "webhook-timestamp", "webhook-signature"],
    "properties": {
        "webhook-id": {"type": "string", "description": "The event id: the same on every retry, redelivery and replay"},
        "webhook-timestamp": {"type": "string", "description": "Unix seconds when this attempt was signed"},
        "webhook-signature": {
            "type": "string",
            "description": 'Space-separated "v1,<base64 HMAC-SHA256 of id.timestamp.body>", one per valid secret',
        },
    },
}


def _message_name(model: type[EventData]) -> str:
    return model.event_type.replace(".", "_")


def asyncapi_document() -> dict[str, Any]:
    models = sorted(EVENT_TYPES.values(), key=lambda m: (m.topic, m.event_type))
    envelopes = {model: CloudEvent[model] for model in models}  # type: ignore[valid-type]
    refs, definitions = models_json_schema(
        [(envelope, "serialization") for envelope in envelopes.values()],
        ref_template="#/components/schemas/{model}",
    )
    messages = {
        _message_name(model): {
            "name": model.event_type,
            "title": model.event_type,
            "summary": (model.__doc__ or "").strip().split("\n\n")[0].replace("\n", " "),
            "contentType": "application/cloudevents+json",
            "payload": refs[(envelopes[model], "serialization")],
            "correlationId": {"location": "$message.payload#/id"},
        }
        for model in models
    }
    topics: dict[str, list[type[EventData]]] = {}
    for model in models:
        topics.setdefault(model.topic, []).append(model)
    channels: dict[str, Any] = {
        topic.replace(".", "_"): {
            "address": topic,
            "description": f"Kafka topic {topic}; partition key: the pupil's UPN, or the school's URN for "
            "school-level events. Delivered at least once: consumers apply each event id once.",
            "messages": {_message_name(m): {"$ref": f"#/components/messages/{_message_name(m)}"} for m in members},
        }
        for topic, members in topics.items()
    }
    deliverable = [m for m in models if m.topic in DELIVERABLE_TOPICS]
    channels["webhook"] = {
        "address": "{subscriber_url}",
        "parameters": {
            "subscriber_url": {"description": "The endpoint URL of a subscription (POST /v1/subscriptions)"}
        },
        "description": "Standard Webhooks deliveries to a subscriber: an HTTP POST of the CloudEvent, signed; "
        "ordered per pupil; retried with exponential backoff and jitter until a 2xx.",
        "messages": {
            _message_name(m): {"$ref": f"#/components/messages/webhook_{_message_name(m)}"} for m in deliverable
        },
    }
    for model in deliverable:
        messages[f"webhook_{_message_name(model)}"] = {
            **messages[_message_name(model)],
            "headers": _WEBHOOK_HEADERS,
            "bindings": {"http": {"method": "POST"}},
        }
    operations = {
        f"consume_{channel}": {
            "action": "receive",
            "channel": {"$ref": f"#/channels/{channel}"},
            "summary": "Subscribe with a Kafka consumer group"
            if channel != "webhook"
            else "Receive signed webhook deliveries",
        }
        for channel in channels
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Attendance platform events",
            "version": "1.0.0",
            "description": "CloudEvents 1.0 (JSON structured mode), thin: identifiers, codes, numbers and a link "
            "to the detail resource; no names, addresses or free text.",
        },
        "defaultContentType": "application/cloudevents+json",
        "servers": {"kafka": {"host": "kafka:9092", "protocol": "kafka", "description": "KAFKA_BOOTSTRAP_SERVERS"}},
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": definitions.get("$defs", {})},
    }


def asyncapi_json() -> str:
    """The document as checked in: stable key order, indented, newline-terminated."""
    return json.dumps(asyncapi_document(), indent=2, sort_keys=True) + "\n"
