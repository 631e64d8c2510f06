"""Standard Webhooks (https://www.standardwebhooks.com): signing for the notifications service and
verification for receivers.

Every delivery carries `webhook-id` (the event id: the same on every retry, redelivery and replay,
so a receiver can drop duplicates), `webhook-timestamp` (Unix seconds) and `webhook-signature`:
`v1,<base64 HMAC-SHA256 of "<id>.<timestamp>.<body>">`, one per valid secret, space-separated, so
that a secret can be rotated without downtime. Receivers can use the `standardwebhooks` package
directly, or this module:

    from shared.webhooks import verify
    event = verify(request_body, request_headers, "whsec_...")   # raises WebhookVerificationError
"""

from __future__ import annotations

import base64
import secrets
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

__all__ = ["WebhookVerificationError", "new_secret", "signed_headers", "verify"]

SECRET_PREFIX = "whsec_"


def new_secret() -> str:
    """A fresh signing secret: 32 random bytes, base64, with the Standard Webhooks prefix."""
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(32)).decode()


def signed_headers(
    signing_secrets: Sequence[str], message_id: str, body: str, at: datetime | None = None
) -> dict[str, str]:
    """The three headers of a delivery of `body`, signed with every secret given (current first)."""
    timestamp = (at or datetime.now(UTC)).astimezone(UTC)
    signatures = " ".join(Webhook(secret).sign(message_id, timestamp, body) for secret in signing_secrets)
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(int(timestamp.timestamp())),
        "webhook-signature": signatures,
    }


def verify(body: bytes | str, headers: Mapping[str, str], secret: str) -> Any:
    """The parsed event if one signature matches `secret` and the timestamp is within 5 minutes of
    now (stale or future deliveries are replays to refuse); WebhookVerificationError otherwise."""
    try:
        return Webhook(secret).verify(body, dict(headers))
    except WebhookVerificationError:
        raise
    except (ValueError, TypeError) as exc:  # malformed signature header or body
        raise WebhookVerificationError(f"malformed webhook: {exc}") from exc
