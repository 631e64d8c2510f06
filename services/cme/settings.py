from typing import Literal

from pydantic import Field

from shared.settings import ServiceSettings


class CmeSettings(ServiceSettings):
    service_name: str = "cme"
    port: int = Field(8004, validation_alias="CME_PORT")
    consumer_group: str = Field("cme", description="Kafka consumer group of the marks, registers and alerts consumer")
    clock_scan_seconds: float = Field(
        60.0,
        description="How often notification clocks and unmarked pupils are checked: a return becomes late "
        "within this long of the end of its due day",
    )
    notification_policy: Literal["default", "national", "havering"] = Field(
        "default",
        description="Notification deadlines for LAs that have not set their own (PUT /v1/cme/policies/{la_code}): "
        "default (1 school day for every addition and deletion), national (reg 13: fifth day, deletion date) or "
        "havering (1 school day for independent schools and schools without a data-sharing agreement)",
    )
    unmarked_sessions: int = Field(
        10, ge=2, description="A pupil on roll with no mark in this many of the school's registers is flagged"
    )
