from pydantic import Field
from pydantic_settings import SettingsConfigDict

from shared.settings import ServiceSettings, platform_env_file


class RegistersSettings(ServiceSettings):
    model_config = SettingsConfigDict(
        env_file=platform_env_file(), env_prefix="", extra="ignore", env_nested_delimiter="__"
    )

    service_name: str = "registers"
    port: int = Field(8001, validation_alias="REGISTERS_PORT")
    retention_years: int = Field(
        6, description="Register entries are kept this many years from their date (Regs 2024 reg 7)."
    )
    max_marks_per_register: int = 5000
