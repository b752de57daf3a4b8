"""Password hashing with argon2id, off the event loop."""

from __future__ import annotations

import asyncio
import functools

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

# OWASP's floor for argon2id: m = 19 MiB, t = 2, p = 1. Settings may raise these, never lower them.
MIN_MEMORY_KIB = 19 * 1024
MIN_TIME_COST = 2


@functools.cache
def _dummy_hash(time_cost: int, memory_kib: int) -> str:
    """One hash per process and parameter set: every container of a process (the tests build one
    per test) would otherwise pay a full argon2 hash at start-up for a value that is always alike."""
    return PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1).hash("not-a-real-password")


class Passwords:
    """Hash and verify passwords; hashes made with weaker parameters are upgraded on login."""

    def __init__(self, *, memory_kib: int = MIN_MEMORY_KIB, time_cost: int = MIN_TIME_COST) -> None:
        time_cost, memory_kib = max(time_cost, MIN_TIME_COST), max(memory_kib, MIN_MEMORY_KIB)
        self._hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_kib, parallelism=1)
        # Verifying against this when the account does not exist keeps timing the same.
        self._dummy = _dummy_hash(time_cost, memory_kib)

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored: str | None, password: str) -> bool:
        """True when the password matches; always costs one argon2 verification."""
        return await asyncio.to_thread(self._verify, stored, password)

    def _verify(self, stored: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(stored or self._dummy, password) and stored is not None
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    def needs_rehash(self, stored: str) -> bool:
        return self._hasher.check_needs_rehash(stored)
