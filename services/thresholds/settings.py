from pydantic import Field

from shared.settings import ServiceSettings


class ThresholdsSettings(ServiceSettings):
    service_name: str = "thresholds"
    port: int = Field(8002, validation_alias="THRESHOLDS_PORT")
    consumer_group: str = Field("thresholds", description="Kafka consumer group of the marks consumer")
