"""Bearer-token auth shared by every service (ADR 0003).

Tokens are JWTs (HS256) carrying a role and its binding: `school` to one or more URNs,
`la_officer`/`la_system` to an LA code, `ops` to nothing. Services verify tokens without a
round trip; the registers service issues them to registered API clients whose secrets are stored
as Argon2 hashes.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Annotated, Any

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerifyMismatchError
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from shared.errors import Problem
from shared.settings import PlatformSettings


class Role(StrEnum):
    SCHOOL = "school"
    LA_OFFICER = "la_officer"
    LA_SYSTEM = "la_system"
    OPS = "ops"


LA_ROLES = frozenset({Role.LA_OFFICER, Role.LA_SYSTEM})


class Unauthenticated(Problem):
    def __init__(self, detail: str) -> None:
        super().__init__(401, "unauthenticated", "Authentication required", detail)


class Forbidden(Problem):
    def __init__(self, detail: str) -> None:
        super().__init__(403, "forbidden", "Forbidden", detail)


@dataclass(frozen=True)
class Principal:
    subject: str
    role: Role
    urns: frozenset[str] = field(default_factory=frozenset)
    la_code: str | None = None

    def can_access_school(self, urn: str, school_la_code: str | None) -> bool:
        if self.role is Role.OPS:
            return True
        if self.role is Role.SCHOOL:
            return urn in self.urns
        return school_la_code is not None and school_la_code == self.la_code

    def require_school(self, urn: str, school_la_code: str | None) -> None:
        if not self.can_access_school(urn, school_la_code):
            raise Forbidden(f"This credential does not give access to school {urn}.")

    def precheck_school(self, urn: str, *, write: bool = False) -> None:
        """Before a school is looked up: a school credential learns nothing about other schools
        (403 whether or not the URN exists), and writes need a school or ops credential."""
        if self.role is Role.SCHOOL and urn not in self.urns:
            raise Forbidden(f"This credential does not give access to school {urn}.")
        if write:
            self.require_role(Role.SCHOOL, Role.OPS)

    def require_la(self, la_code: str, *roles: Role) -> None:
        """One of `roles` (any role if none given), and the LA's own credential unless ops."""
        if roles:
            self.require_role(*roles)
        if self.role is not Role.OPS and self.la_code != la_code:
            raise Forbidden(f"This credential does not give access to LA {la_code}.")

    def la_filter(self, la_code: str | None) -> str | None:
        """The LA a list is limited to: an LA credential's own (asking for another is 403); as
        asked for schools (their rows are limited by URN) and ops."""
        if self.role in LA_ROLES:
            if la_code is not None and la_code != self.la_code:
                raise Forbidden(f"This credential does not give access to LA {la_code}.")
            return self.la_code
        return la_code

    def scope(self, query: Any, model: Any) -> Any:
        """Limit a query on `model` (with `urn` and `la_code` columns) to the rows this credential
        reaches: its schools, its LA, or everything for ops."""
        if self.role is Role.SCHOOL:
            return query.where(model.urn.in_(self.urns))
        if self.la_code:
            return query.where(model.la_code == self.la_code)
        return query

    def require_role(self, *roles: Role) -> None:
        if self.role not in roles:
            allowed = ", ".join(r.value for r in roles)
            raise Forbidden(f"This operation needs one of the roles: {allowed}.")


def validate_binding(role: Role, urns: frozenset[str] | set[str], la_code: str | None) -> None:
    """A role's binding must be complete: schools name URNs, LA roles an LA code, ops nothing."""
    if role is Role.SCHOOL and (not urns or la_code):
        raise ValueError("role school needs at least one URN and no LA code")
    if role in LA_ROLES and (not la_code or urns):
        raise ValueError(f"role {role.value} needs an LA code and no URNs")
    if role is Role.OPS and (urns or la_code):
        raise ValueError("role ops takes no URN or LA code")


def issue_token(
    settings: PlatformSettings,
    *,
    subject: str,
    role: Role,
    urns: frozenset[str] | set[str] = frozenset(),
    la_code: str | None = None,
    ttl_seconds: int | None = None,
) -> str:
    validate_binding(role, urns, la_code)
    now = int(time.time())
    claims: dict[str, object] = {
        "iss": settings.jwt_issuer,
        "aud": settings.jwt_audience,
        "sub": subject,
        "iat": now,
        "exp": now + (settings.token_ttl_seconds if ttl_seconds is None else ttl_seconds),
        "jti": uuid.uuid4().hex,
        "role": role.value,
    }
    if urns:
        claims["urns"] = sorted(urns)
    if la_code:
        claims["la_code"] = la_code
    return jwt.encode(claims, settings.jwt_secret, algorithm="HS256")


def decode_token(settings: PlatformSettings, token: str) -> Principal:
    try:
        claims = jwt.decode(
            token,
            settings.jwt_secret,
            algorithms=["HS256"],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            options={"require": ["exp", "iat", "sub", "iss", "aud"]},
        )
    except jwt.ExpiredSignatureError as exc:
        raise Unauthenticated("The bearer token has expired.") from exc
    except jwt.InvalidTokenError as exc:
        raise Unauthenticated(f"The bearer token is not valid: {exc}.") from exc
    try:
        role = Role(claims.get("role"))
        principal = Principal(
            subject=str(claims["sub"]),
            role=role,
            urns=frozenset(claims.get("urns") or ()),
            la_code=claims.get("la_code"),
        )
        validate_binding(principal.role, principal.urns, principal.la_code)
    except ValueError as exc:
        raise Unauthenticated(f"The bearer token has an invalid role binding: {exc}.") from exc
    return principal


_bearer = HTTPBearer(auto_error=False, description="JWT from POST /v1/auth/token or `attendance token`")


async def current_principal(
    request: Request, credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)]
) -> Principal:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise Unauthenticated("Send a bearer token in the Authorization header.")
    return decode_token(request.app.state.settings, credentials.credentials)


CurrentPrincipal = Annotated[Principal, Depends(current_principal)]

_hasher = PasswordHasher()


def hash_secret(secret: str) -> str:
    return _hasher.hash(secret)


def verify_secret(secret_hash: str, secret: str) -> bool:
    try:
        return _hasher.verify(secret_hash, secret)
    except (VerifyMismatchError, InvalidHashError):
        return False
