from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings, platform_env_file


class CaseworkSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_file=platform_env_file(), env_prefix="", extra="ignore", env_nested_delimiter="__"
    )

    service_name: str = "casework"
    port: int = Field(8003, validation_alias="CASEWORK_PORT")
    consumer_group: str = Field("casework", description="Kafka consumer group of the alerts consumer")
    clock_scan_seconds: float = Field(60.0, description="How often overdue clocks are looked for")
    clock_policy: str = Field("national", description="Clock preset: national, or widnes (£60/£120 notices)")
