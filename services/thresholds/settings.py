from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings, platform_env_file


class ThresholdsSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_file=platform_env_file(), env_prefix="", extra="ignore", env_nested_delimiter="__"
    )

    service_name: str = "thresholds"
    port: int = Field(8002, validation_alias="THRESHOLDS_PORT")
    consumer_group: str = Field("thresholds", description="Kafka consumer group of the marks consumer")
