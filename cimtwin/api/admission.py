"""Admission control: heavy requests queue for a few slots per process, lookups never do.

On a district graph an isolation or an incident context costs PostgreSQL ten times what a
grid lookup does, and a district volume query with a large polygon as much again. Left
alone, twenty people running analyses fill the database with heavy statements and every map
click waits behind them. Each API process therefore runs at most ``analysis_concurrency``
analyses at once. The others wait their turn, holding no database connection, and get a 503
with ``Retry-After`` after ``analysis_wait_s``.

Bulk assigns (``POST /grids/assign``) hold up to ``assign_max_body_mb`` of rows in memory
each: six at once took a process from 629 MB to 1 974 MB. They have their own, separate
slots (``bulk_concurrency``, ``bulk_wait_s``) so that they neither starve analyses nor pile up;
a waiting one has not read its body yet.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, HTTPException, Request


async def _slot(slots: asyncio.Semaphore, wait: float, what: str) -> AsyncIterator[None]:
    try:
        await asyncio.wait_for(slots.acquire(), wait)
    except TimeoutError:
        raise HTTPException(
            503,
            f"busy with other {what} (waited {wait:g} s); retry shortly",
            headers={"Retry-After": "5"},
        ) from None
    try:
        yield
    finally:
        slots.release()


async def analysis_slot(request: Request) -> AsyncIterator[None]:
    """FastAPI dependency for analysis routes; list it before the connection dependency."""
    state = request.app.state
    async for _ in _slot(state.analysis_slots, state.settings.analysis_wait_s, "network analyses"):
        yield


async def bulk_slot(request: Request) -> AsyncIterator[None]:
    """FastAPI dependency for bulk routes; list it before the body is read and before the
    connection dependency."""
    state = request.app.state
    async for _ in _slot(state.bulk_slots, state.settings.bulk_wait_s, "bulk assigns"):
        yield


BulkSlot = Annotated[None, Depends(bulk_slot)]
