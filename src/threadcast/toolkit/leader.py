"""Leader-only timers: run a timer in every term of its duty this process wins."""

from __future__ import annotations

import asyncio

import structlog

from threadcast.coord import Coordinator
from threadcast.toolkit.aio import Shutdown
from threadcast.toolkit.timer_worker import TimerWorker

log = structlog.get_logger("threadcast.toolkit")


async def run_as_leader(worker: TimerWorker, coord: Coordinator, shutdown: Shutdown) -> None:
    """Stand for election for the timer's duty and run the timer in every term won (the
    coordinator's `Leadership.run`: a term that ends stops the timer first). When the shutdown
    begins, a candidate that does not lead withdraws at once; a leader lets its run in
    progress finish within the grace period, then resigns."""
    duty = worker.spec.leader
    assert duty is not None
    async with coord.leader(duty) as leadership:
        campaign = asyncio.create_task(leadership.run(worker.run), name=f"leader-{duty}")
        try:
            await asyncio.wait({campaign, shutdown.stopping_waiter}, return_when=asyncio.FIRST_COMPLETED)
            if not campaign.done() and leadership.is_leader:
                expired = asyncio.ensure_future(shutdown.expired.wait())
                await asyncio.wait({campaign, expired}, return_when=asyncio.FIRST_COMPLETED)
                expired.cancel()
        finally:
            if not campaign.done():
                campaign.cancel()
            await asyncio.gather(campaign, return_exceptions=True)
        if not campaign.cancelled():
            campaign.result()
