"""`Idempotency-Key` for writes that create: a retry with the same key and body gets the first
answer; the same key with another body is rejected (422).

The key is claimed with an INSERT in the request's own transaction. A concurrent retry blocks on
the key's unique index until the first request commits (then it reads the stored answer) or rolls
back (then it proceeds as the first).
"""

from __future__ import annotations

import hashlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Annotated, Any, TypeVar

import orjson
from fastapi import Header, Request, Response, status
from pydantic import BaseModel
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncSession

from shared.errors import Problem, Unprocessable

MAX_KEY_LENGTH = 255

IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", description="Retry safely: the same key and body get the first answer"),
]
M = TypeVar("M", bound=BaseModel)


@dataclass(frozen=True)
class StoredResponse:
    status: int
    body: dict[str, Any]


def fingerprint(body: bytes) -> str:
    return hashlib.sha256(body).hexdigest()


def check_key(key: str) -> str:
    if not key or len(key) > MAX_KEY_LENGTH or not key.isprintable():
        raise Problem(
            400,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
            f"Idempotency-Key must be 1-{MAX_KEY_LENGTH} printable characters",
        )
    return key


async def claim(
    session: AsyncSession, schema: str, scope: str, key: str, request_fingerprint: str
) -> StoredResponse | None:
    """Claim the key for this request, or return the stored answer of the first request."""
    inserted = await session.execute(
        text(
            f'INSERT INTO "{schema}".idempotency_keys (scope, key, request_fingerprint) '
            "VALUES (:scope, :key, :fp) ON CONFLICT DO NOTHING RETURNING key"
        ),
        {"scope": scope, "key": check_key(key), "fp": request_fingerprint},
    )
    if inserted.first() is not None:
        return None
    row = (
        await session.execute(
            text(
                f'SELECT request_fingerprint, status_code, response FROM "{schema}".idempotency_keys '
                "WHERE scope = :scope AND key = :key"
            ),
            {"scope": scope, "key": key},
        )
    ).one()
    if row.request_fingerprint != request_fingerprint:
        raise Unprocessable(
            "idempotency-key-reused",
            "This Idempotency-Key was already used with a different request body; "
            "use a new key for a different request.",
        )
    return StoredResponse(status=row.status_code, body=row.response)


async def store(session: AsyncSession, schema: str, scope: str, key: str, status: int, body: dict[str, Any]) -> None:
    await session.execute(
        text(
            f'UPDATE "{schema}".idempotency_keys SET status_code = :status, '
            "response = CAST(:body AS jsonb) WHERE scope = :scope AND key = :key"
        ),
        {"status": status, "body": orjson.dumps(body).decode(), "scope": scope, "key": key},
    )


async def write_once(
    session: AsyncSession,
    schema: str,
    scope: str,
    key: str | None,
    request: Request,
    response: Response,
    model: type[M],
    write: Callable[[], Awaitable[tuple[M, bool]]],
) -> M:
    """Run an endpoint's `write` (returning its body and whether it created something: 201, else
    200) once per Idempotency-Key; a retry gets the stored answer, marked `Idempotent-Replayed`."""
    if key is not None:
        stored = await claim(session, schema, scope, key, fingerprint(await request.body()))
        if stored is not None:
            response.status_code = stored.status
            response.headers["Idempotent-Replayed"] = "true"
            return model.model_validate(stored.body)
    body, created = await write()
    response.status_code = status.HTTP_201_CREATED if created else status.HTTP_200_OK
    if key is not None:
        await store(session, schema, scope, key, response.status_code, body.model_dump(mode="json"))
    return body
