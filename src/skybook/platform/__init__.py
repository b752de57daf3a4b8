"""Shared kernel: database, unit of work, outbox, errors, HTTP plumbing, idempotency."""
