from pydantic import Field

from shared.settings import ServiceSettings


class CaseworkSettings(ServiceSettings):
    service_name: str = "casework"
    port: int = Field(8003, validation_alias="CASEWORK_PORT")
    consumer_group: str = Field("casework", description="Kafka consumer group of the alerts consumer")
    clock_scan_seconds: float = Field(60.0, description="How often overdue clocks are looked for")
    clock_policy: str = Field("national", description="Clock preset: national, or widnes (£60/£120 notices)")
