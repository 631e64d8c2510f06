"""One settings object per service, read from the environment.

`make run` writes the connection details of the platform it started to `<data dir>/platform.env`;
every service and the ops CLI read that file too, so CLI commands act on the running platform
without extra flags. Real environment variables always win over the file.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from shared.encryption import SecretBox

REPO_ROOT = Path(__file__).resolve().parent.parent


def data_dir() -> Path:
    """The folder holding all local state (embedded PostgreSQL, logs, the platform env file)."""
    return Path(os.environ.get("ATTENDANCE_DATA_DIR", REPO_ROOT / ".data"))


def platform_env_file() -> Path:
    return data_dir() / "platform.env"


class PlatformSettings(BaseSettings):
    """Settings every service shares. Production sets these as environment variables."""

    model_config = SettingsConfigDict(env_file=platform_env_file(), env_file_encoding="utf-8", extra="ignore")

    database_url: str = Field(
        "postgresql+asyncpg://postgres@127.0.0.1:5432/attendance",
        description="SQLAlchemy URL of the platform database; each service uses its own schema.",
    )
    database_pool_size: int = 10
    kafka_bootstrap_servers: str = "127.0.0.1:9092"
    kafka_topic_partitions: int = Field(12, description="Partitions for topics the services create when missing.")
    kafka_replication_factor: int = Field(1, description="Replication factor for created topics.")
    jwt_secret: str = Field(
        "change-me-in-production-this-is-not-a-secret",
        min_length=32,
        description="HMAC key signing bearer tokens (HS256).",
    )
    secrets_key: str = Field(
        "ZGV2ZWxvcG1lbnQtb25seS1ub3QtYS1zZWNyZXQtMDE=",
        description="Fernet key(s) encrypting the secrets stored for reading back (webhook signing secrets): "
        "comma-separated, newest first; the first encrypts, every one decrypts.",
    )
    jwt_issuer: str = "attendance-platform"
    jwt_audience: str = "attendance-platform"
    token_ttl_seconds: int = 3600
    log_level: str = "INFO"
    log_json: bool = True
    outbox_batch_size: int = 5000
    outbox_poll_interval_seconds: float = 0.05
    consumer_batch_size: int = 2000
    consumer_batch_timeout_ms: int = 50

    @field_validator("secrets_key")
    @classmethod
    def _usable_keys(cls, value: str) -> str:
        try:
            SecretBox(value)
        except ValueError as exc:
            raise ValueError(f"SECRETS_KEY must be Fernet keys (32 url-safe base64 bytes each): {exc}") from exc
        return value


class ServiceSettings(PlatformSettings):
    """Base for a service's settings: the shared ones plus its name and port.

    Each service reads its port from `<SERVICE>_PORT`; code (tests, the CLI) may also pass `port=`.
    """

    model_config = SettingsConfigDict(
        env_file=platform_env_file(), env_file_encoding="utf-8", extra="ignore", populate_by_name=True
    )

    service_name: str = "service"
    host: str = "127.0.0.1"
    port: int = 8000
    public_url: str = Field("", description="Base URL clients reach this service at; links in events start with it.")

    def link(self, path: str) -> str:
        base = self.public_url or f"http://{self.host}:{self.port}"
        return base.rstrip("/") + path

    @property
    def db_schema(self) -> str:
        return self.service_name
