"""Composition root: builds the object graph from settings. No I/O happens here."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy.ext.asyncio import AsyncEngine

from skybook.booking.handlers import TicketIssuer
from skybook.booking.repository import TICKETED_CHANNEL
from skybook.booking.seat_maps import SeatMapCacheInvalidator, SeatMaps
from skybook.identity import Authenticator, KeyRing, Passwords, TokenService
from skybook.notifications import EmlWriter, SmtpSender, SmtpServer
from skybook.notifications.webhooks import WebhookFanout
from skybook.payments import PaymentProvider, SandboxPaymentProvider
from skybook.platform.cache import CacheStore, MemoryStore, NullStore, ReadThroughCache, RedisStore
from skybook.platform.clock import Clock, SystemClock
from skybook.platform.db import create_engine, is_sqlite, listen_dsn
from skybook.platform.dispatcher import Consumer, InProcessDispatcher
from skybook.platform.ratelimit import RateLimiter, limiter_uri
from skybook.platform.signals import NoSignals, PgSignals, Signals
from skybook.platform.uow import UnitOfWork
from skybook.search.cache import SearchCacheInvalidator, SearchSources
from skybook.settings import Settings


@dataclass
class Container:
    """Everything a process needs, wired once; handlers receive it as their dependencies."""

    settings: Settings
    engine: AsyncEngine
    clock: Clock
    payments: PaymentProvider
    write_lock: asyncio.Lock | None
    dispatcher: InProcessDispatcher = field(init=False)
    passwords: Passwords = field(init=False)
    tokens: TokenService = field(init=False)
    limiter: RateLimiter = field(init=False)
    authenticator: Authenticator = field(init=False)
    cache: ReadThroughCache = field(init=False)
    search_sources: SearchSources = field(init=False)
    seat_maps: SeatMaps = field(init=False)
    order_signals: Signals = field(init=False)

    def __post_init__(self) -> None:
        s = self.settings
        self.passwords = Passwords(memory_kib=s.password_memory_kib, time_cost=s.password_time_cost)
        self.tokens = TokenService(
            KeyRing.from_settings(s.signing_keys, s.secret_key),
            issuer=s.jwt_issuer,
            audience=s.jwt_audience,
            ttl=timedelta(seconds=s.access_token_ttl_seconds),
        )
        self.limiter = RateLimiter(limiter_uri(s.redis_url))
        self.authenticator = Authenticator(self.engine, self.tokens, self.clock)
        # One read-through cache (one store, one Redis connection pool) for every cached read
        # model; metrics tell them apart by cache name ("search", "seat_map").
        self.cache = ReadThroughCache(
            self._cache_store(),
            ttl_seconds=s.cache_ttl_seconds,
            jitter=s.cache_ttl_jitter,
            lock_ms=s.cache_lock_ms,
            wait_ms=s.cache_wait_ms,
        )
        self.search_sources = SearchSources(self.cache, self.engine)
        self.seat_maps = SeatMaps(self.cache, self.engine)
        self.dispatcher = InProcessDispatcher(self.uow, self.clock, self.consumers())
        dsn = listen_dsn(s.resolved_database_url)
        self.order_signals = PgSignals(dsn, TICKETED_CHANNEL) if dsn else NoSignals()

    def consumers(self) -> list[Consumer]:
        """Every event consumer of the platform; the in-process dispatcher and the workers run these."""
        s = self.settings
        mail: EmlWriter | SmtpSender
        if s.smtp_url:
            mail = SmtpSender(SmtpServer.from_url(s.smtp_url), s.mail_from, timeout=s.smtp_timeout_seconds)
        else:
            mail = EmlWriter(s.mail_dir, s.mail_from)
        tickets = TicketIssuer(self)
        webhooks = WebhookFanout(self.clock)
        invalidator = SearchCacheInvalidator(self.cache)
        seat_map_invalidator = SeatMapCacheInvalidator(self.cache)
        return [
            Consumer(tickets.name, tickets.event_types, tickets, transport="tasks"),
            Consumer(mail.name, mail.event_types, mail, transport="tasks"),
            Consumer(webhooks.name, webhooks.event_types, webhooks, transport="tasks"),
            Consumer(invalidator.name, invalidator.event_types, invalidator, transport="stream"),
            Consumer(
                seat_map_invalidator.name, seat_map_invalidator.event_types, seat_map_invalidator, transport="stream"
            ),
        ]

    async def close(self) -> None:
        """Release what the container opened: the signal listener, the cache client, the pool."""
        await self.order_signals.close()
        await self.cache.close()
        await self.engine.dispose()

    async def let_consumers_run(self, seconds: float) -> None:
        """Give the event consumers a moment, while a request waits for one of their effects.

        The consumers run in the dispatcher loop of this process (embedded default) or in worker
        processes, so waiting is enough. A process that is meant to run them (``run_workers``)
        but whose loop is not running - the tests drive the app without its lifespan, one-shot
        tools have none - delivers the pending events right here instead.
        """
        if self.settings.run_workers and not self.dispatcher.running:
            while await self.dispatcher.drain() >= self.dispatcher.batch_size:
                pass
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _cache_store(self) -> CacheStore:
        s = self.settings
        if s.redis_url:
            return RedisStore(
                s.redis_url,
                prefix=s.cache_key_prefix,
                timeout_ms=s.cache_redis_timeout_ms,
                retry_seconds=s.cache_retry_seconds,
            )
        if s.run_workers:
            # Embedded default: this process's dispatcher handles inventory.changed, so it can
            # invalidate its own memory.
            return MemoryStore(s.cache_max_entries)
        # Events are handled by other processes that cannot reach this memory: caching here
        # would serve stale seat counts until the TTL, so do not cache at all.
        return NullStore()

    def uow(self, *, raw: bool = False) -> UnitOfWork:
        """A new unit of work (one transaction); ``raw``: asyncpg directly on PostgreSQL (hot paths)."""
        return UnitOfWork(self.engine, write_lock=self.write_lock, after_commit=self.dispatcher.wake, raw=raw)

    def consumer_uow(self) -> UnitOfWork:
        """A unit of work for a worker's batch: the inbox claim and the transaction by asyncpg, the
        consumers' own statements through ``conn`` in the same transaction (``mixed``)."""
        return UnitOfWork(
            self.engine, write_lock=self.write_lock, after_commit=self.dispatcher.wake, raw=True, mixed=True
        )

    @property
    def hold_ttl(self) -> timedelta:
        return timedelta(seconds=self.settings.hold_ttl_seconds)

    async def pause(self, seconds: float) -> None:
        """Wait without blocking the loop (tests replace it to observe the delay instead)."""
        if seconds > 0:
            await asyncio.sleep(seconds)

    @property
    def refresh_ttl(self) -> timedelta:
        return timedelta(days=self.settings.refresh_token_ttl_days)

    @property
    def max_passengers(self) -> int:
        return self.settings.max_passengers

    @property
    def ticketing_wait(self) -> float:
        return self.settings.ticketing_wait_seconds

    @property
    def accounting_code(self) -> str:
        return self.settings.airline_accounting_code


def bootstrap(
    settings: Settings | None = None,
    *,
    clock: Clock | None = None,
    payments: PaymentProvider | None = None,
) -> Container:
    """Wire the adapters that the settings choose."""
    settings = settings or Settings()
    url = settings.resolved_database_url
    if is_sqlite(url):
        settings.data_dir.mkdir(parents=True, exist_ok=True)
    engine = create_engine(
        url,
        pool_size=settings.database_pool_size,
        max_overflow=settings.database_max_overflow,
        pool_timeout_s=settings.database_pool_timeout_seconds,
        lock_timeout_ms=settings.database_lock_timeout_ms,
    )
    return Container(
        settings=settings,
        engine=engine,
        clock=clock or SystemClock(),
        payments=payments or SandboxPaymentProvider(),
        write_lock=asyncio.Lock() if is_sqlite(url) else None,
    )
