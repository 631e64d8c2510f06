from pydantic import Field

from shared.settings import ServiceSettings


class NotificationsSettings(ServiceSettings):
    service_name: str = "notifications"
    port: int = Field(8005, validation_alias="NOTIFICATIONS_PORT")
    consumer_group: str = Field("notifications", description="Kafka consumer group of the events consumer")
    delivery_timeout_seconds: float = Field(5.0, description="How long a subscriber has to answer one delivery")
    retry_base_seconds: float = Field(5.0, description="First retry delay; each further retry doubles it")
    retry_max_seconds: float = Field(3600.0, description="Longest delay between two attempts")
    retry_budget: int = Field(15, ge=1, description="Attempts before a delivery is dead-lettered (about 9 hours)")
    max_in_flight: int = Field(64, ge=1, description="Deliveries under way at once in one process")
    max_in_flight_per_subscription: int = Field(
        8, ge=1, description="Deliveries under way at once to one subscriber: a slow one never takes every slot"
    )
    dispatch_poll_seconds: float = Field(0.1, description="How often due deliveries are looked for")
    allow_http_endpoints: bool = Field(
        False,
        description="Accept plain-http webhook URLs and ones on loopback or private networks (development and "
        "tests only; production endpoints are public https)",
    )
    previous_secret_seconds: int = Field(86400, description="How long a rotated-out secret still signs deliveries")
    thresholds_url: str = Field(
        "http://127.0.0.1:8002", description="The thresholds service, for the pupil's figures in letters"
    )
    casework_url: str = Field(
        "http://127.0.0.1:8003", description="The casework service, where sent letters are recorded"
    )
    cme_url: str = Field("http://127.0.0.1:8004", description="The CME service, for the worklist digest")
    digest_hour: int = Field(7, ge=0, le=23, description="Hour (London) after which the daily digests go out")
    letter_poll_seconds: float = Field(1.0, description="How often letters waiting to be rendered are looked for")
    smtp_host: str = Field("127.0.0.1", description="SMTP server for email to officers")
    smtp_port: int = Field(25)
    smtp_username: str | None = None
    smtp_password: str | None = None
    smtp_starttls: bool = False
    mail_from: str = Field("attendance-platform@localhost", description="From address of the platform's email")
