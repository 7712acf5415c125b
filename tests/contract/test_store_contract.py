"""The store's contract: the repository, the outbox, fences and the SQL inbox behave the same on
SQLite (embedded) and on PostgreSQL (when THREADCAST_TEST_BACKENDS names `postgres`;
THREADCAST_TEST_DATABASE_URL is its server: `dev/services env postgres`).

Every test gets an empty database of its own (`tests.databases`), brought to the newest
migration. The concurrency tests make many requests at once through several repositories with
engines of their own, as several API processes would; they count what was written, never how
long it took.
"""

from __future__ import annotations

import asyncio
import sys
from asyncio.subprocess import PIPE, STDOUT
from collections.abc import AsyncIterator

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import func, inspect, select, text
from sqlalchemy.engine import Connection

from tests.conftest import backend_params
from tests.databases import empty_database_url
from threadcast.coord import NotLeaderError
from threadcast.events import Event, decode_event
from threadcast.services import relay
from threadcast.store.db import Database, alembic_config
from threadcast.store.fences import advance_fence
from threadcast.store.models import Base, Fence, OutboxEvent, Vote
from threadcast.store.repository import Conflict, NotFound, Repository, ThreadView
from threadcast.store.sanitize import clean_message
from threadcast.toolkit import SqlInbox
from threadcast.toolkit.memory import MemoryLog

CONCURRENCY = 20
"""Requests made at once by the concurrency tests (more than a pool's 15 connections)."""
PROCESSES = 4
"""API processes the concurrency tests stand for: repositories with engines of their own."""


@pytest.fixture(params=backend_params("postgres"))
async def database_url(request, data_dir) -> AsyncIterator[str]:
    async with empty_database_url(request.param, data_dir) as url:
        yield url


@pytest.fixture
async def database(database_url) -> AsyncIterator[Database]:
    db = Database(database_url)
    await db.migrate()
    yield db
    await db.close()


@pytest.fixture
def repo(database) -> Repository:
    return Repository(database)


@pytest.fixture
async def processes(database_url, database) -> AsyncIterator[list[Repository]]:
    """Repositories as in `PROCESSES` API processes: each with its own engine and pool (and
    its own batching of posts), so they meet only in the database."""
    databases = [Database(database_url) for _ in range(PROCESSES)]
    yield [Repository(db) for db in databases]
    for db in databases:
        await db.close()


def spread(processes: list[Repository], n: int) -> Repository:
    return processes[n % len(processes)]


@pytest.fixture
async def thread(repo) -> ThreadView:
    await repo.create_forum("news", "News")
    thread, _ = await repo.get_or_create_thread("news", "a-1", "A", "/a-1")
    return thread


async def outbox(database: Database) -> list[Event]:
    async with database.session() as session:
        rows = (await session.scalars(select(OutboxEvent).order_by(OutboxEvent.id))).all()
    return [decode_event(row.payload) for row in rows]


async def count(database: Database, model: type[Base]) -> int:
    async with database.session() as session:
        return await session.scalar(select(func.count()).select_from(model)) or 0


async def all_posts(repo: Repository, thread_id: int) -> list[dict]:
    return await repo.list_posts(thread_id, after_seq=None, before_seq=None, limit=1000, descending=False)


# -- schema ----------------------------------------------------------------------------------


async def test_the_migrated_schema_is_the_models(database):
    """`alembic upgrade head` from empty gives exactly the tables, columns, keys and constraints
    that the models declare: no model change lacks its migration on this database."""

    def differences(connection: Connection) -> list:
        return compare_metadata(MigrationContext.configure(connection), Base.metadata)

    async with database.engine.connect() as conn:
        assert await conn.run_sync(differences) == []


MIGRATE = """
import asyncio, sys
from threadcast.store.db import Database

async def main() -> None:
    db = Database(sys.argv[1])
    try:
        await db.migrate()
    finally:
        await db.close()

asyncio.run(main())
"""


async def test_processes_starting_at_once_on_an_empty_database_all_migrate_it(database_url):
    """Every service process brings the schema up on start; several may start together."""
    children = [
        await asyncio.create_subprocess_exec(sys.executable, "-c", MIGRATE, database_url, stdout=PIPE, stderr=STDOUT)
        for _ in range(PROCESSES)
    ]
    outputs = [out.decode() for out, _ in await asyncio.gather(*(child.communicate() for child in children))]
    failures = [out.strip().splitlines()[-1] for child, out in zip(children, outputs, strict=True) if child.returncode]
    assert failures == []
    database = Database(database_url)
    try:
        async with database.engine.connect() as conn:
            version = await conn.scalar(text("SELECT version_num FROM alembic_version"))
        assert version == ScriptDirectory.from_config(alembic_config(database_url)).get_current_head()
    finally:
        await database.close()


async def migrate_to(db: Database, revision: str, *, down: bool = False) -> None:
    def run(connection: Connection) -> None:
        config = alembic_config(db.url)
        config.attributes["connection"] = connection
        (command.downgrade if down else command.upgrade)(config, revision)

    async with db.engine.begin() as conn:
        await conn.run_sync(run)


async def columns(db: Database, table: str) -> set[str]:
    async with db.engine.connect() as conn:
        return await conn.run_sync(lambda sync: {c["name"] for c in inspect(sync).get_columns(table)})


async def test_migration_0003_gives_existing_posts_a_zero_score_and_goes_back(database_url):
    database = Database(database_url)
    try:
        await migrate_to(database, "0002")
        async with database.engine.begin() as conn:
            await conn.execute(
                text("INSERT INTO forums (id, name, title, created_at) VALUES (1, 'f', 'F', '2026-01-01')")
            )
            await conn.execute(
                text("INSERT INTO threads (id, forum_id, identifier, title, url, last_seq, created_at)"
                     " VALUES (1, 1, 't', '', '', 1, '2026-01-01')")
            )
            await conn.execute(
                text("INSERT INTO posts (id, thread_id, seq, author_name, message, version, created_at)"
                     " VALUES (1, 1, 1, 'ann', 'old', 1, '2026-01-01')")
            )
        await database.migrate()
        repo = Repository(database)
        [old] = await all_posts(repo, 1)
        assert (old["score"], old["upvotes"], old["downvotes"], old["score_version"]) == (0, 0, 0, 0)
        assert (await repo.vote(1, "bob", 1)).score == 1

        await migrate_to(database, "0002", down=True)
        assert "score" not in await columns(database, "posts")
        async with database.engine.connect() as conn:
            tables = await conn.run_sync(lambda sync: inspect(sync).get_table_names())
            message = await conn.scalar(text("SELECT message FROM posts WHERE id = 1"))
        assert "votes" not in tables and message == "old"
        await migrate_to(database, "base", down=True)
        await database.migrate()
        assert await columns(database, "votes") >= {"post_id", "voter", "value"}
    finally:
        await database.close()


# -- forums and threads ----------------------------------------------------------------------


async def test_a_forum_is_created_once(repo):
    forum, created = await repo.create_forum("tech", "Tech")
    assert created and forum.name == "tech"
    again, created = await repo.create_forum("tech", "Other title")
    assert not created and (again.id, again.title) == (forum.id, "Tech")
    assert (await repo.get_forum("tech")).id == forum.id
    with pytest.raises(NotFound):
        await repo.get_forum("nope")


async def test_a_thread_is_created_once_per_forum_and_identifier_even_at_once(repo, processes):
    forums = await asyncio.gather(*(spread(processes, n).create_forum("news", "News") for n in range(CONCURRENCY)))
    assert sum(created for _, created in forums) == 1
    await repo.create_forum("tech", "Tech")
    made = await asyncio.gather(
        *(spread(processes, n).get_or_create_thread("news", "a-1", "A", "/a-1") for n in range(CONCURRENCY))
    )
    assert sum(created for _, created in made) == 1
    assert len({thread.id for thread, _ in made}) == 1
    thread = made[0][0]
    assert (thread.forum, thread.identifier, thread.title, thread.url) == ("news", "a-1", "A", "/a-1")
    assert thread.post_count == 0
    assert await repo.find_thread("news", "a-1") == thread == await repo.get_thread(thread.id)
    assert thread.created_at.tzinfo is not None
    other, created = await repo.get_or_create_thread("tech", "a-1", "Elsewhere", "/")
    assert created and other.id != thread.id
    with pytest.raises(NotFound):
        await repo.get_or_create_thread("nope", "a-1", "", "")
    with pytest.raises(NotFound):
        await repo.find_thread("news", "a-2")
    with pytest.raises(NotFound):
        await repo.get_thread(424242)


# -- posts and the outbox --------------------------------------------------------------------


async def test_a_post_is_saved_with_its_event_in_one_transaction(database, repo, thread):
    message = clean_message('<b>hi</b> <script>alert(1)</script><a href="javascript:x">ü😀 &amp; "q"</a>')
    post, created = await repo.create_post(thread.id, "ann", message)
    assert created and "<script" not in message and "javascript:" not in message
    assert (post["seq"], post["version"], post["message"], post["parent_id"]) == (1, 1, message, None)
    assert (post["score"], post["upvotes"], post["downvotes"], post["score_version"]) == (0, 0, 0, 0)
    assert await all_posts(repo, thread.id) == [post], "stored as given, every character intact"
    assert (await repo.get_thread(thread.id)).post_count == 1

    async with database.session() as session:
        [row] = (await session.scalars(select(OutboxEvent))).all()
    event = decode_event(row.payload)
    assert (row.topic, row.key, row.event_id) == ("events", str(thread.id), event.event_id)
    assert (event.type, event.thread_id, event.forum, event.version) == ("post.created", thread.id, "news", 1)
    assert event.payload == post


async def test_an_idempotency_key_gives_one_post_per_thread(database, repo, thread):
    first, created = await repo.create_post(thread.id, "ann", "once", idempotency_key="k1")
    again, created_again = await repo.create_post(thread.id, "ann", "changed my mind", idempotency_key="k1")
    assert (created, created_again) == (True, False)
    assert again == first
    other_thread, _ = await repo.get_or_create_thread("news", "a-2", "B", "/a-2")
    elsewhere, created = await repo.create_post(other_thread.id, "ann", "once", idempotency_key="k1")
    assert created and elsewhere["id"] != first["id"]
    unkeyed = [await repo.create_post(thread.id, "ann", "same") for _ in range(2)]
    assert [created for _, created in unkeyed] == [True, True]
    assert [p["seq"] for p in await all_posts(repo, thread.id)] == [1, 2, 3]
    assert await repo.outbox_size() == 4


async def test_concurrent_posts_with_one_idempotency_key_make_one_post(database, repo, processes, thread):
    answers = await asyncio.gather(
        *(
            spread(processes, n).create_post(thread.id, "ann", f"try {n}", idempotency_key="k1")
            for n in range(CONCURRENCY)
        )
    )
    assert sum(created for _, created in answers) == 1
    assert len({post["id"] for post, _ in answers}) == 1
    [stored] = await all_posts(repo, thread.id)
    assert stored == answers[0][0] and stored["seq"] == 1
    assert (await repo.get_thread(thread.id)).post_count == 1, "the losers gave their seq back"
    assert [e.payload["id"] for e in await outbox(database)] == [stored["id"]]
    assert (await repo.create_post(thread.id, "bob", "next"))[0]["seq"] == 2


async def test_concurrent_posts_are_numbered_without_gaps_and_queued_in_order(database, repo, processes, thread):
    answers = await asyncio.gather(
        *(spread(processes, n).create_post(thread.id, "ann", f"m{n}") for n in range(CONCURRENCY))
    )
    assert all(created for _, created in answers)
    assert sorted(post["seq"] for post, _ in answers) == list(range(1, CONCURRENCY + 1))
    assert (await repo.get_thread(thread.id)).post_count == CONCURRENCY
    events = await outbox(database)
    assert [e.payload["seq"] for e in events] == list(range(1, CONCURRENCY + 1)), "outbox order is seq order"


async def test_replies_and_parent_checks_write_nothing_when_refused(database, repo, thread):
    parent, _ = await repo.create_post(thread.id, "a", "root")
    reply, _ = await repo.create_post(thread.id, "b", "re", parent_id=parent["id"])
    assert reply["parent_id"] == parent["id"]
    with pytest.raises(NotFound):
        await repo.create_post(thread.id, "b", "re", parent_id=424242)
    other, _ = await repo.get_or_create_thread("news", "b", "", "")
    with pytest.raises(Conflict):
        await repo.create_post(other.id, "b", "x", parent_id=parent["id"])
    with pytest.raises(NotFound):
        await repo.create_post(424242, "b", "x")
    assert await repo.outbox_size() == 2
    assert ((await repo.get_thread(thread.id)).post_count, (await repo.get_thread(other.id)).post_count) == (2, 0)
    assert (await repo.create_post(other.id, "b", "first"))[0]["seq"] == 1


async def test_listing_pages_by_seq_both_ways(repo, thread):
    for n in range(7):
        await repo.create_post(thread.id, "a", f"m{n}")

    async def seqs(after: int | None = None, before: int | None = None, limit: int = 3, descending: bool = False):
        page = await repo.list_posts(thread.id, after_seq=after, before_seq=before, limit=limit, descending=descending)
        return [p["seq"] for p in page]

    assert await seqs() == [1, 2, 3]
    assert await seqs(after=3) == [4, 5, 6]
    assert await seqs(after=6) == [7]
    assert await seqs(descending=True) == [7, 6, 5]
    assert await seqs(before=5, descending=True) == [4, 3, 2]
    assert await seqs(after=2, before=6, limit=10) == [3, 4, 5]
    assert await seqs(after=7) == []
    with pytest.raises(NotFound):
        await repo.list_posts(424242, after_seq=None, before_seq=None, limit=3, descending=False)


# -- group commit: posts made together share a transaction (store/post_writer.py) -------------


async def test_posts_of_one_batch_each_get_their_own_answer(repo, thread):
    """Refused posts in the middle of a batch fail alone, take no seq, and the rest is saved
    in the callers' order."""
    other, _ = await repo.get_or_create_thread("news", "b", "", "")
    parent, _ = await repo.create_post(other.id, "ann", "elsewhere")
    answers = await asyncio.gather(
        repo.create_post(thread.id, "ann", "one", idempotency_key="k"),
        repo.create_post(thread.id, "ann", "bad parent", parent_id=424242),
        repo.create_post(thread.id, "ann", "parent in another thread", parent_id=parent["id"]),
        repo.create_post(424242, "ann", "no such thread"),
        repo.create_post(thread.id, "ann", "again", idempotency_key="k"),
        repo.create_post(thread.id, "ann", "two"),
        repo.create_post(other.id, "ann", "reply", parent_id=parent["id"]),
        return_exceptions=True,
    )
    assert [type(a).__name__ for a in answers] == ["tuple", "NotFound", "Conflict", "NotFound", "tuple", "tuple", "tuple"]
    (one, created), (again, created_again), (two, _), (reply, _) = answers[0], answers[4], answers[5], answers[6]
    assert (created, created_again, again) == (True, False, one)
    assert [post["seq"] for post in (one, two, reply)] == [1, 2, 2]
    assert [post["message"] for post in await all_posts(repo, thread.id)] == ["one", "two"]


async def test_a_key_taken_by_another_process_during_a_batch_is_answered_with_its_post(database, repo, processes, thread, monkeypatch):
    """Another process uses a key between the batch's check and its write: the batch fails on
    the unique constraint, its posts are written one by one, and the key's caller gets the
    winner's post."""
    writer = repo._posts
    check = writer._check

    async def check_then_lose_the_race(batch):  # type: ignore[no-untyped-def]
        fresh = await check(batch)
        if any(post.idempotency_key == "raced" for post in fresh):
            await processes[0].create_post(thread.id, "bob", "winner", idempotency_key="raced")
        return fresh

    monkeypatch.setattr(writer, "_check", check_then_lose_the_race)
    (raced, raced_created), (other, other_created) = await asyncio.gather(
        repo.create_post(thread.id, "ann", "loser", idempotency_key="raced"),
        repo.create_post(thread.id, "ann", "bystander", idempotency_key="other"),
    )
    assert (raced["message"], raced_created, other["message"], other_created) == ("winner", False, "bystander", True)
    assert [(e.payload["message"], e.payload["seq"]) for e in await outbox(database)] == [("winner", 1), ("bystander", 2)]


async def test_a_value_the_database_refuses_fails_its_post_alone(database, repo, thread):
    """PostgreSQL's text refuses NUL (the API answers 422 before; SQLite stores it): whatever
    the database refuses fails that post only."""
    answers = await asyncio.gather(
        repo.create_post(thread.id, "ann", "before"),
        repo.create_post(thread.id, "a\x00b", "refused on PostgreSQL"),
        repo.create_post(thread.id, "ann", "after"),
        return_exceptions=True,
    )
    saved = [a[0]["message"] for a in answers if isinstance(a, tuple)]
    assert saved in (["before", "after"], ["before", "refused on PostgreSQL", "after"])
    assert [post["message"] for post in await all_posts(repo, thread.id)] == saved
    assert [post["seq"] for post in await all_posts(repo, thread.id)] == list(range(1, len(saved) + 1))
    assert len(await outbox(database)) == len(saved)


async def test_a_caller_that_leaves_does_not_stop_its_batch(database, repo, thread):
    leaving = asyncio.ensure_future(repo.create_post(thread.id, "ann", "left", idempotency_key="k"))
    staying = [asyncio.ensure_future(repo.create_post(thread.id, "ann", f"stay {n}", idempotency_key="k")) for n in range(2)]
    await asyncio.sleep(0)
    leaving.cancel()
    answers = await asyncio.gather(*staying)
    assert [(post["message"], created) for post, created in answers] == [("left", False), ("left", False)]
    assert [post["message"] for post in await all_posts(repo, thread.id)] == ["left"]


# -- votes -----------------------------------------------------------------------------------


@pytest.fixture
async def post(repo, thread) -> dict:
    return (await repo.create_post(thread.id, "ann", "vote"))[0]


async def test_a_vote_counts_once_per_voter_and_can_be_turned_and_taken_back(database, repo, thread, post):
    def tally(result) -> tuple[int, int, int, int]:
        return (result.score, result.upvotes, result.downvotes, result.score_version)

    first = await repo.vote(post["id"], "bob", 1)
    assert (first.created, first.changed, tally(first)) == (True, True, (1, 1, 0, 1))
    repeat = await repo.vote(post["id"], "bob", 1)
    assert (repeat.created, repeat.changed, tally(repeat)) == (False, False, (1, 1, 0, 1))
    for voter, value in (("cy", 1), ("dee", -1)):
        assert (await repo.vote(post["id"], voter, value)).created
    turned = await repo.vote(post["id"], "bob", -1)
    assert (turned.created, turned.changed, tally(turned)) == (False, True, (-1, 1, 2, 4))
    removed = await repo.vote(post["id"], "dee", 0)
    assert (removed.value, tally(removed)) == (0, (0, 1, 1, 5))
    assert not (await repo.vote(post["id"], "dee", 0)).changed
    assert tally(await repo.vote(post["id"], "nobody", 0)) == (0, 1, 1, 5)

    events = (await outbox(database))[1:]
    assert [e.type for e in events] == ["vote.created"] * 3 + ["vote.updated", "vote.deleted"]
    assert [e.version for e in events] == [1, 2, 3, 4, 5]
    assert [e.payload["score"] for e in events] == [1, 2, 1, -1, 0]
    assert (events[3].payload["previous"], events[3].payload["value"]) == (1, -1)
    assert events[4].payload["id"] == events[2].payload["id"], "the removed vote is dee's"
    assert all((e.thread_id, e.forum, e.payload["post_id"]) == (thread.id, "news", post["id"]) for e in events)
    [listed] = await all_posts(repo, thread.id)
    assert (listed["score"], listed["upvotes"], listed["downvotes"], listed["score_version"]) == (0, 1, 1, 5)
    assert listed["version"] == 1, "a vote is not an edit"
    assert await count(database, Vote) == 2
    again = await repo.vote(post["id"], "dee", 1)
    assert again.created and again.score == 1


async def test_concurrent_votes_on_one_post_all_count_and_one_voter_counts_once(database, repo, processes, post):
    voters = [(f"v{i}", 1 if i % 3 else -1) for i in range(12)]
    same = [("twice", 1)] * CONCURRENCY
    results = await asyncio.gather(
        *(spread(processes, n).vote(post["id"], name, value) for n, (name, value) in enumerate(voters + same))
    )
    assert sum(r.created for r in results) == len(voters) + 1
    assert sum(r.changed for r in results) == len(voters) + 1
    [listed] = await all_posts(repo, post["thread_id"])
    expected = sum(value for _, value in voters) + 1
    assert (listed["score"], listed["upvotes"], listed["downvotes"]) == (expected, 9, 4)
    assert listed["score_version"] == len(voters) + 1
    assert sorted(r.score_version for r in results if r.changed) == list(range(1, len(voters) + 2))
    assert await count(database, Vote) == len(voters) + 1
    assert len(await outbox(database)) == 1 + len(voters) + 1


async def test_a_vote_on_a_missing_post_is_not_found_and_writes_nothing(database, repo, thread):
    with pytest.raises(NotFound):
        await repo.vote(424242, "bob", 1)
    assert (await count(database, Vote), await repo.outbox_size()) == (0, 0)


# -- fences and the relay --------------------------------------------------------------------


async def fenced(database: Database, epoch: int, duty: str = "relay") -> None:
    async with database.session() as session, session.begin():
        await advance_fence(session, duty, epoch)


async def fence(database: Database, duty: str = "relay") -> int | None:
    async with database.session() as session:
        return await session.scalar(select(Fence.epoch).where(Fence.duty == duty))


async def test_a_fence_only_moves_forward(database):
    await fenced(database, 7)
    await fenced(database, 7)
    await fenced(database, 9)
    with pytest.raises(NotLeaderError, match="epoch 9 already acted"):
        await fenced(database, 8)
    await fenced(database, 1, duty="other")
    assert (await fence(database), await fence(database, "other")) == (9, 1)


async def test_a_deposed_leader_waits_for_the_newer_leaders_transaction_then_stops(database):
    """The old leader's transaction must not interleave with the new leader's: it waits for the
    new one's fence row, then finds it ahead, on both the first insert and a later update."""
    for first_epoch in (None, 5):
        duty = f"duty-{first_epoch}"
        if first_epoch is not None:
            await fenced(database, first_epoch, duty)
        async with database.session() as newer, newer.begin():
            await advance_fence(newer, duty, 8)
            older = asyncio.create_task(fenced(database, 7, duty))
            await asyncio.sleep(0.3)  # let it reach the fence row and wait there
            assert not older.done(), "the older leader went ahead while the newer one's transaction was open"
        with pytest.raises(NotLeaderError):
            await older
        assert await fence(database, duty) == 8


async def test_leaders_racing_for_a_new_fence_let_the_newer_epoch_act(database):
    """Two leaders' first transactions at once: the newer epoch acts after the older one's
    commit, whichever inserted the fence row."""
    async with database.session() as older, older.begin():
        await advance_fence(older, "relay", 7)
        newer = asyncio.create_task(fenced(database, 8))
        await asyncio.sleep(0.3)  # let it reach the fence row and wait there
    await newer
    assert await fence(database) == 8


async def test_the_relay_moves_the_outbox_in_order_unless_fenced_off(database, repo, thread):
    posts = [(await repo.create_post(thread.id, "ada", f"post {n}"))[0] for n in range(3)]
    log = MemoryLog()
    await log.create_topic("events", 1)

    def relayed() -> list[int]:
        return [decode_event(record.value).payload["id"] for record in log.records("events")[0]]

    assert await relay.relay_once(database, log, epoch=7, batch=2) == 2
    assert await relay.relay_once(database, log, epoch=7, batch=2) == 1
    later, _ = await repo.create_post(thread.id, "ada", "later")
    with pytest.raises(NotLeaderError):
        await relay.relay_once(database, log, epoch=6)
    assert (relayed(), await repo.outbox_size()) == ([p["id"] for p in posts], 1)
    assert await relay.relay_once(database, log, epoch=8) == 1
    assert relayed() == [p["id"] for p in [*posts, later]]
    assert await repo.outbox_size() == 0
    assert await relay.relay_once(database, log, epoch=8) == 0


# -- the SQL inbox ---------------------------------------------------------------------------


async def test_an_inbox_transaction_commits_the_effect_with_the_entry_or_neither(database):
    inbox = SqlInbox(database)
    await inbox.start()
    async with database.engine.begin() as conn:
        await conn.execute(text("CREATE TABLE effects (event_id VARCHAR(64))"))

    async def apply(event_id: str, *, crash: bool = False) -> bool:
        async with inbox.transaction("writer", event_id) as session:
            if session is None:
                return False
            await session.execute(text("INSERT INTO effects VALUES (:id)"), {"id": event_id})
            if crash:
                raise RuntimeError("died before the commit")
            return True

    with pytest.raises(RuntimeError):
        await apply("evt-1", crash=True)
    assert not await inbox.seen("writer", "evt-1")
    assert await apply("evt-1")
    assert not await apply("evt-1")
    assert sum(await asyncio.gather(*(apply("evt-2") for _ in range(CONCURRENCY)))) == 1
    async with database.session() as session:
        rows = (await session.execute(text("SELECT event_id FROM effects ORDER BY event_id"))).scalars().all()
    assert rows == ["evt-1", "evt-2"]
