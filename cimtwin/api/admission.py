"""Admission control: network analyses queue for a few slots per process, lookups never do.

On a district graph an isolation or an incident context costs PostgreSQL ten times what a
grid lookup does. Left alone, twenty people running analyses fill the database with heavy
statements and every map click waits behind them. Each API process therefore runs at most
``analysis_concurrency`` analyses at once. The others wait their turn, holding no database
connection, and get a 503 with ``Retry-After`` after ``analysis_wait_s``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from fastapi import HTTPException, Request


async def analysis_slot(request: Request) -> AsyncIterator[None]:
    """FastAPI dependency for analysis routes; list it before the connection dependency."""
    slots: asyncio.Semaphore = request.app.state.analysis_slots
    wait = request.app.state.settings.analysis_wait_s
    try:
        await asyncio.wait_for(slots.acquire(), wait)
    except TimeoutError:
        raise HTTPException(
            503,
            f"busy with other network analyses (waited {wait:g} s); retry shortly",
            headers={"Retry-After": "5"},
        ) from None
    try:
        yield
    finally:
        slots.release()
