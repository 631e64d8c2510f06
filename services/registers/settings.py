from pydantic import Field

from shared.settings import ServiceSettings


class RegistersSettings(ServiceSettings):
    service_name: str = "registers"
    port: int = Field(8001, validation_alias="REGISTERS_PORT")
    retention_years: int = Field(
        6, description="Register entries are kept this many years from their date (Regs 2024 reg 7)."
    )
    max_marks_per_register: int = 5000
    token_failure_limit: int = Field(
        10, ge=1, description="Failed token requests a client id, and a source address, may make within the window"
    )
    token_failure_window_seconds: int = Field(60, ge=1, description="The window failed token requests count in")
