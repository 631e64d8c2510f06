"""Who read which pupil's record.

Every endpoint that returns one named pupil's record (their marks, figures, alert, case, roll
entries, CME case, letters), or a search narrowed to one pupil (`upn=`), records the read in the
same transaction: who (the credential's subject, role, schools or LA), which pupil (UPN) and
school, what (method and route), when and the request id. Each service keeps its own log, in its
own schema, and serves it at `GET /v1/audit/record-reads`: LA officers see the reads of their
LA's pupils, ops every read.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Annotated, Any

import structlog
from fastapi import APIRouter, Depends, Query, Request
from pydantic import BaseModel, ConfigDict
from sqlalchemy import BigInteger, DateTime, Index, String, Text, func, select
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Mapped, declared_attr, mapped_column

from shared.auth import CurrentPrincipal, Principal, Role
from shared.db import Session, newest_first
from shared.params import LA_CODE_PATTERN, URN_PATTERN


class RecordReadColumns:
    """The record-reads table; each service maps it on its own base (`class RecordRead(RecordReadColumns, Base)`)."""

    __tablename__ = "record_reads"

    @declared_attr.directive
    def __table_args__(cls) -> tuple[Any, ...]:
        return (Index("ix_record_reads_upn", "upn", "id"), Index("ix_record_reads_la_code", "la_code", "id"))

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True, autoincrement=True)
    at: Mapped[datetime] = mapped_column(DateTime(timezone=True), server_default=func.now())
    reader: Mapped[str] = mapped_column(Text)  # the credential's subject
    reader_role: Mapped[str] = mapped_column(Text)
    reader_urns: Mapped[list[str]] = mapped_column(ARRAY(Text))
    reader_la_code: Mapped[str | None] = mapped_column(String(3))
    upn: Mapped[str] = mapped_column(String(13))
    urn: Mapped[str | None] = mapped_column(String(6))
    la_code: Mapped[str | None] = mapped_column(String(3))  # the pupil's LA: whose officers see the read
    endpoint: Mapped[str] = mapped_column(Text)  # method and route template, e.g. "GET /v1/cases/{case_id}"
    request_id: Mapped[str | None] = mapped_column(Text)


class ReadLog:
    """Records this request's reads of pupils' records; they commit (or not) with the request."""

    def __init__(self, request: Request, session: AsyncSession, principal: Principal) -> None:
        self._model = request.app.state.record_read_model
        self._session = session
        self._principal = principal
        self._endpoint = f"{request.method} {getattr(request.scope.get('route'), 'path', request.url.path)}"
        self._request_id = structlog.contextvars.get_contextvars().get("request_id")
        self._recorded: set[tuple[str, str | None, str | None]] = set()

    def record(self, upn: str, urn: str | None, la_code: str | None) -> None:
        if (upn, urn, la_code) in self._recorded:
            return
        self._recorded.add((upn, urn, la_code))
        self._session.add(
            self._model(
                reader=self._principal.subject,
                reader_role=self._principal.role.value,
                reader_urns=sorted(self._principal.urns),
                reader_la_code=self._principal.la_code,
                upn=upn,
                urn=urn,
                la_code=la_code,
                endpoint=self._endpoint,
                request_id=self._request_id,
            )
        )

    def record_each(self, records: Iterable[Any]) -> None:
        """Each pupil record of a list (objects with `upn`, `urn` and `la_code`)."""
        for record in records:
            self.record(record.upn, record.urn, record.la_code)


async def _read_log(request: Request, session: Session, principal: CurrentPrincipal) -> ReadLog:
    return ReadLog(request, session, principal)


RecordReads = Annotated[ReadLog, Depends(_read_log)]


class RecordReadOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    at: datetime
    reader: str
    reader_role: str
    reader_urns: list[str]
    reader_la_code: str | None
    upn: str
    urn: str | None
    la_code: str | None
    endpoint: str
    request_id: str | None


class RecordReadPage(BaseModel):
    items: list[RecordReadOut]
    next_cursor: int | None


def audit_router() -> APIRouter:
    router = APIRouter(prefix="/v1", tags=["audit"])

    @router.get(
        "/audit/record-reads",
        summary="Who read which pupil's record, newest first (LA officers: their LA's pupils; ops: all)",
    )
    async def record_reads(
        request: Request,
        session: Session,
        principal: CurrentPrincipal,
        upn: Annotated[str | None, Query(min_length=13, max_length=13)] = None,
        urn: Annotated[str | None, Query(pattern=URN_PATTERN)] = None,
        la_code: Annotated[str | None, Query(pattern=LA_CODE_PATTERN)] = None,
        from_: Annotated[datetime | None, Query(alias="from", description="Reads at or after (ISO 8601)")] = None,
        to: Annotated[datetime | None, Query(description="Reads before (ISO 8601)")] = None,
        cursor: Annotated[int | None, Query(ge=1)] = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> RecordReadPage:
        principal.require_role(Role.LA_OFFICER, Role.OPS)
        model = request.app.state.record_read_model
        query = select(model)
        if from_ is not None:
            query = query.where(model.at >= from_)
        if to is not None:
            query = query.where(model.at < to)
        rows, next_cursor = await newest_first(
            session,
            query,
            model.id,
            equal=[(model.upn, upn), (model.urn, urn), (model.la_code, principal.la_filter(la_code))],
            cursor=cursor,
            limit=limit,
        )
        return RecordReadPage(items=[RecordReadOut.model_validate(r) for r in rows], next_cursor=next_cursor)

    return router
