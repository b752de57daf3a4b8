"""Settings: the only module that reads the environment (``SKYBOOK_*`` variables)."""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PLACEHOLDER_SECRETS = frozenset({"", "change-me", "changeme", "secret", "dev-secret-change-me"})
# Shortest retention of outbox events and inbox entries: the audit leaves out the last hour before
# the cut-off (ops.audit), so a shorter one would leave it almost nothing to check.
MIN_RETENTION_HOURS = 2


class Settings(BaseSettings):
    """Typed configuration of one Skybook process; every field maps to ``SKYBOOK_<NAME>``."""

    model_config = SettingsConfigDict(env_prefix="SKYBOOK_", env_file=".env", env_file_encoding="utf-8", extra="ignore")

    environment: Literal["development", "test", "production"] = Field(
        "development",
        description="Deployment stage; placeholder secrets are refused outside development.",
    )
    data_dir: Path = Field(Path("var"), description="Directory for the SQLite file, e-mails and other local state.")
    database_url: str | None = Field(
        None,
        description="SQLAlchemy async URL; default is a SQLite file under data_dir. "
        "Use postgresql+asyncpg://user@host/db for PostgreSQL.",
    )
    database_pool_size: int = Field(20, ge=1, le=200, description="Connections per process (PostgreSQL).")
    database_max_overflow: int = Field(
        0,
        ge=0,
        le=200,
        description="Extra connections a burst may open beyond the pool; each is closed again when returned, "
        "so under steady load they churn (a backend start and a TLS handshake each). 0 keeps the pool fixed.",
    )
    database_pool_timeout_seconds: float = Field(
        10.0,
        gt=0,
        le=60,
        description="How long a request waits for a free pooled connection before answering 503 busy.",
    )
    database_lock_timeout_ms: int = Field(
        3000,
        ge=100,
        description="How long a transaction waits for a row lock before answering busy.",
    )
    secret_key: str = Field("dev-secret-change-me", description="Key for signing tokens; must be set in production.")
    host: str = Field("127.0.0.1", description="Address the HTTP server binds to.")
    port: int = Field(8000, ge=1, le=65535, description="Port the HTTP server listens on.")
    redis_url: str | None = Field(
        None, description="Redis URL (redis://host:6379/0); rate limits are shared through it. Empty: in memory."
    )
    cache_ttl_seconds: float = Field(
        3600.0,
        ge=0,
        le=3600,
        description="Lifetime of cached search legs and seat maps. Events invalidate them as soon as they are "
        "handled, so the TTL only bounds what a lost event could cost; a long one keeps the rarely asked legs "
        "cached. 0 turns the cache off.",
    )
    cache_ttl_jitter: float = Field(
        0.1, ge=0, le=0.5, description="Cached values live ttl x (1 +/- jitter), drawn at random per value."
    )
    cache_key_prefix: str = Field(
        "skybook", pattern=r"^[A-Za-z0-9_.:-]{1,64}$", description="Prefix of every cache key in Redis."
    )
    cache_lock_ms: int = Field(
        2000, ge=10, le=60_000, description="Lifetime of the cross-process lock of one recomputation (Redis)."
    )
    cache_wait_ms: int = Field(
        200, ge=0, le=10_000, description="How long a request waits for another process's recomputation."
    )
    cache_redis_timeout_ms: int = Field(
        500, ge=10, le=10_000, description="Connect/read timeout of cache calls to Redis; slower counts as down."
    )
    cache_retry_seconds: float = Field(
        5.0,
        ge=0,
        le=300,
        description="After 3 Redis failures in a row the cache is bypassed this long, then tried again.",
    )
    cache_max_entries: int = Field(10_000, ge=1, description="Most values of the in-memory cache (no Redis).")
    signing_keys: str = Field(
        "",
        description="JWT signing keys as kid=secret pairs separated by commas, the active key first; retired "
        "keys stay listed until their tokens expire. Empty: one key derived from secret_key.",
    )
    access_token_ttl_seconds: int = Field(900, ge=60, le=900, description="Access token lifetime (15 minutes at most).")
    refresh_token_ttl_days: int = Field(30, ge=1, le=90, description="Refresh token lifetime.")
    jwt_issuer: str = Field("skybook", description="iss claim of access tokens.")
    jwt_audience: str = Field("skybook-api", description="aud claim of access tokens.")
    password_memory_kib: int = Field(
        19 * 1024, ge=19 * 1024, description="argon2id memory cost (KiB); OWASP minimum 19 MiB."
    )
    password_time_cost: int = Field(2, ge=2, le=10, description="argon2id iterations; OWASP minimum 2.")
    anonymous_rate_limit: int = Field(
        60, ge=1, description="Requests per minute per address on the routes that need no log-in."
    )
    cors_origins: str = Field("", description="Comma-separated origins allowed by CORS; empty allows none.")
    allow_loopback_webhooks: bool = Field(
        False, description="Allow outbound URLs on loopback (tests only); private ranges stay refused."
    )
    webhook_timeout_seconds: float = Field(
        10.0, gt=0, le=60, description="How long one webhook delivery attempt may take (connect, send, answer)."
    )
    webhook_retry_base_seconds: float = Field(
        30.0, gt=0, description="Delay before the first webhook retry; each further retry doubles it (with jitter)."
    )
    webhook_retry_max_delay_seconds: float = Field(
        3600.0, gt=0, description="Longest delay between two webhook attempts."
    )
    webhook_max_age_seconds: int = Field(
        259_200, ge=60, description="A webhook delivery not accepted this long after the event is marked failed."
    )
    webhook_secret_grace_seconds: int = Field(
        86_400,
        ge=0,
        le=604_800,
        description="After a secret rotation, how long deliveries are also signed with the old secret.",
    )
    webhook_sender_interval_seconds: float = Field(
        1.0, gt=0, description="How often the webhook sender looks for due deliveries."
    )
    hold_ttl_seconds: int = Field(
        900, ge=30, le=86400, description="Ticketing time limit of a hold (default 15 minutes)."
    )
    hold_sweep_interval_seconds: float = Field(
        5.0, gt=0, description="How often the sweeper releases expired holds and unpaid orders."
    )
    max_body_bytes: int = Field(262_144, ge=1024, description="Largest request body accepted (413 above).")
    max_passengers: int = Field(9, ge=1, le=9, description="Most passengers in one booking.")
    airline_accounting_code: str = Field(
        "987", pattern=r"^\d{3}$", description="3-digit airline prefix of issued e-ticket numbers."
    )
    mail_from: str = Field("Skybook Air <tickets@skybook.invalid>", description="Sender of confirmation e-mails.")
    smtp_url: str | None = Field(
        None,
        description="SMTP server for confirmation e-mails: smtp://{user}:{password}@host:587?starttls=true, or "
        "smtps://... for implicit TLS. Empty: e-mails are written as .eml files under data_dir/mail.",
    )
    smtp_timeout_seconds: float = Field(10.0, gt=0, le=120, description="Longest wait for the SMTP server.")
    ticketing_wait_seconds: float = Field(
        5.0,
        ge=0,
        le=30,
        description="How long POST /v1/orders/{id}/payments waits for the tickets after the capture before "
        "answering 202 Accepted (the tickets then follow; poll the order).",
    )
    run_workers: bool = Field(
        True,
        description="Run the event dispatcher and the hold sweeper inside the API process (embedded default).",
    )
    kafka_bootstrap_servers: str | None = Field(
        None, description="Kafka bootstrap servers (host:port,...) for the relay and workers; empty: no Kafka."
    )
    rabbitmq_url: str | None = Field(
        None,
        description="RabbitMQ URL (amqp://user@host:5672/, password included) for the relay and workers; empty: none.",
    )
    broker_prefix: str = Field(
        "skybook",
        pattern=r"^[a-z][a-z0-9_-]{0,31}$",
        description="Prefix of Kafka topics and groups and RabbitMQ exchanges and queues "
        "(skybook.<context>.events, skybook.tasks, skybook.<consumer>).",
    )
    relay_batch_size: int = Field(500, ge=1, le=10_000, description="Most outbox rows the relay publishes at once.")
    rabbitmq_events_per_message: int = Field(
        100,
        ge=1,
        le=1000,
        description="Most consecutive events of one type the relay puts in one RabbitMQ message (a JSON array); "
        "1: one event per message, the only form workers built before this setting existed can read (keep 1 "
        "until every worker is upgraded).",
    )
    relay_poll_interval_seconds: float = Field(
        1.0, gt=0, description="How often the relay looks at the outbox without a NOTIFY wake-up."
    )
    relay_linger_ms: float = Field(
        2.0,
        ge=0,
        le=100,
        description="While events flow, how long the relay waits before reading the outbox again instead of "
        "waiting for a NOTIFY (writers stop notifying meanwhile); 0: a round per NOTIFY.",
    )
    relay_max_backoff_seconds: float = Field(
        2.0,
        gt=0,
        description="Longest wait between the relay's attempts while a broker is down (one cheap connect "
        "attempt per wait, so a short cap ends a backlog soon after the broker is back).",
    )
    relay_crash_after_publish: bool = Field(
        False, description="Testing only: the relay exits right after a confirmed publish, before marking it sent."
    )
    worker_prefetch: int = Field(
        64, ge=1, le=5000, description="Unacknowledged messages a worker holds per consumer (bounded concurrency)."
    )
    kafka_fetch_wait_max_ms: int = Field(
        100,
        ge=1,
        le=10_000,
        description="Longest a worker's Kafka fetch waits for records (fetch.wait.max.ms). A real broker answers "
        "as soon as a record is there; librdkafka's mock cluster holds each fetch this long, so tests and "
        "benchmarks on it lower it.",
    )
    worker_max_attempts: int = Field(
        5, ge=1, le=100, description="Attempts at one message before it goes to the dead-letter queue."
    )
    worker_max_busy_retries: int = Field(
        100,
        ge=0,
        le=100_000,
        description=(
            "Retries of a message whose failure was the database's state (a lock held past the lock"
            " timeout, the database restarting): they do not count towards worker_max_attempts."
        ),
    )
    worker_retry_base_delay_seconds: float = Field(
        1.0, gt=0, description="Delay before the first retry of a failed message; doubles with each attempt."
    )
    outbox_retention_hours: float = Field(
        168,
        ge=0,
        le=87_600,
        description="Hours a delivered outbox event is kept before the workers delete it (0: keep every event). "
        "Undelivered events are never deleted.",
    )
    inbox_retention_hours: float = Field(
        192,
        ge=0,
        le=87_600,
        description="Hours a consumer's inbox entry (its proof of having handled an event) is kept (0: keep all). "
        "It must outlive every redelivery of the event, such as a Kafka consumer group reset within the topic's "
        "retention, and so is at least outbox_retention_hours.",
    )
    retention_interval_seconds: float = Field(
        300, gt=0, description="How often the workers delete outbox events and inbox entries past their retention."
    )
    backbone_metrics_port: int = Field(
        0, ge=0, le=65535, description="Port on which relay and worker serve Prometheus metrics; 0: off."
    )
    extra_consumers: str = Field(
        "",
        description="Comma-separated module:function entries returning more event consumers "
        "(plug-ins and tests); empty: only the built-in ones.",
    )
    docs_enabled: bool = Field(True, description="Serve /docs and /redoc.")
    log_level: str = Field("INFO", description="Root log level.")
    log_format: Literal["json", "console"] = Field(
        "console", description="json: one JSON object per log record (production); console: readable lines."
    )
    metrics_enabled: bool = Field(
        True,
        description="Serve Prometheus metrics at /metrics (outside /v1, no principal: keep it off the public "
        "gateway; the shipped nginx config refuses it).",
    )

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        if self.environment != "development" and self.secret_key in PLACEHOLDER_SECRETS:
            raise ValueError("SKYBOOK_SECRET_KEY must be set to a real secret outside development")
        if self.environment != "development" and len(self.secret_key) < 24 and not self.signing_keys:
            raise ValueError("SKYBOOK_SECRET_KEY must be at least 24 characters outside development")
        return self

    @model_validator(mode="after")
    def _inbox_outlives_outbox(self) -> Settings:
        # A consumer's inbox entry is what makes a redelivered event harmless, so it must be kept at
        # least as long as the event itself; the audit also relies on it (ops.audit).
        outbox_h, inbox_h = self.outbox_retention_hours, self.inbox_retention_hours
        for name, hours in (("OUTBOX", outbox_h), ("INBOX", inbox_h)):
            if 0 < hours < MIN_RETENTION_HOURS:
                raise ValueError(
                    f"SKYBOOK_{name}_RETENTION_HOURS must be 0 (keep all) or {MIN_RETENTION_HOURS} or more"
                )
        if inbox_h and (not outbox_h or inbox_h < outbox_h):
            raise ValueError(
                "SKYBOOK_INBOX_RETENTION_HOURS must be 0 (keep all) or SKYBOOK_OUTBOX_RETENTION_HOURS or more"
            )
        return self

    @cached_property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to a SQLite file inside ``data_dir``."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'skybook.db').resolve()}"

    @property
    def mail_dir(self) -> Path:
        """Where confirmation e-mails are written as .eml files."""
        return self.data_dir / "mail"
