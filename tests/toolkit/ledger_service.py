"""A service run as a child process by test_crash.py, on the embedded SQLite backends.

`python -m tests.toolkit.ledger_service DATA_DIR` applies payments from the work queue
`payments` to a `ledger` table, exactly once per payment through `SqlInbox.transaction` (which
records the inbox entry itself, hence `idempotent=False`), and prints `handled <id>` after each
payment, applied or found applied before. Environment, for the payment whose id is STOP_ON:

- STOP_AT=before-commit: print a marker and hang inside the transaction (to be killed);
- STOP_AT=after-commit: print a marker and hang after the commit, before the ack;
- STOP_AT=hold: print a marker, then wait for the file DATA_DIR/release and finish.
"""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import msgspec
from sqlalchemy import text

from threadcast.config import Settings
from threadcast.logs import configure_logging
from threadcast.toolkit import Backends, Context, Runner, Service, SqlInbox

STOP_AT = os.environ.get("STOP_AT", "")
STOP_ON = os.environ.get("STOP_ON", "")
MARKER = "stopped at"


class Payment(msgspec.Struct, frozen=True):
    id: str
    amount: int


svc = Service("ledger")


@svc.on_startup
async def create_ledger(ctx: Context) -> None:
    async with ctx.database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE IF NOT EXISTS ledger (payment TEXT, amount INTEGER)"))


@svc.consumer(queue="payments", model=Payment, prefetch=4, idempotent=False)
async def apply(payment: Payment, ctx: Context) -> None:
    inbox = ctx.inbox
    assert isinstance(inbox, SqlInbox)
    stopping_here = payment.id == STOP_ON
    async with inbox.transaction(ctx.consumer, ctx.event_id or "") as session:
        if session is not None:  # None: applied before
            row = {"id": payment.id, "amount": payment.amount}
            await session.execute(text("INSERT INTO ledger VALUES (:id, :amount)"), row)
            if stopping_here and STOP_AT == "before-commit":
                await stop_here()
    if stopping_here and STOP_AT == "after-commit":
        await stop_here()
    if stopping_here and STOP_AT == "hold":
        print(MARKER, STOP_AT, flush=True)
        release = ctx.settings.data_dir / "release"
        while not release.exists():
            await asyncio.sleep(0.01)
    print("handled", payment.id, flush=True)


async def stop_here() -> None:
    print(MARKER, STOP_AT, flush=True)
    await asyncio.Event().wait()  # until SIGKILL


def main() -> int:
    configure_logging("info")
    settings = Settings(data_dir=Path(sys.argv[1]))
    return Runner([svc], Backends.from_settings(settings), settings=settings, grace=20.0).run()


if __name__ == "__main__":
    sys.exit(main())
