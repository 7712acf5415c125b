"""The contract of every object store: the local folder always, S3 when THREADCAST_TEST_BACKENDS
names `s3` (THREADCAST_TEST_S3_URL says where the server is: `dev/services env s3`).

Every S3 test works under its own key prefix, emptied afterwards. The S3 stores list 7 keys
per request, so listings of more keys than that go through pagination.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import duckdb
import pytest

from tests.conftest import backend_params
from threadcast.store.objects import FolderStore, InvalidKey, ObjectNotFound, ObjectStore
from threadcast.store.objects.sql import connect

PAGE_SIZE = 7

StoreFactory = Callable[[str], ObjectStore]
"""Makes a store rooted at the test's root plus a suffix ("" for the test's own store)."""


def s3_url(prefix: str) -> str:
    """THREADCAST_TEST_S3_URL with `prefix` as its key prefix."""
    parts = urlsplit(os.environ["THREADCAST_TEST_S3_URL"])
    return urlunsplit(parts._replace(path=f"{parts.path.rstrip('/')}/{prefix}"))


@pytest.fixture(params=backend_params("s3"))
async def make_store(request, tmp_path) -> AsyncIterator[StoreFactory]:
    root = f"contract-{uuid.uuid4().hex[:12]}"
    made: list[ObjectStore] = []

    def make(suffix: str = "") -> ObjectStore:
        if request.param == "embedded":
            store: ObjectStore = FolderStore(tmp_path / (root + suffix))
        else:
            from threadcast.store.objects.s3 import S3Store

            store = S3Store(s3_url(root + suffix), page_size=PAGE_SIZE)
        made.append(store)
        return store

    yield make
    for store in made:
        for key in await store.list():
            await store.delete(key)
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> ObjectStore:
    store = make_store("")
    await store.start()
    await store.start()  # idempotent
    return store


async def test_put_get_replace(store: ObjectStore):
    await store.put("stats/a.json", b'{"v": 1}', content_type="application/json")
    assert await store.get("stats/a.json") == b'{"v": 1}'
    await store.put("stats/a.json", b'{"v": 2}')
    assert await store.get("stats/a.json") == b'{"v": 2}'
    assert await store.list() == ["stats/a.json"]


async def test_missing_object(store: ObjectStore):
    with pytest.raises(ObjectNotFound):
        await store.get("nothing/here")
    assert not await store.exists("nothing/here")
    await store.put("nothing/there", b"x")
    with pytest.raises(ObjectNotFound):
        await store.get("nothing/here")
    with pytest.raises(ObjectNotFound):
        await store.get("nothing")  # a "folder" is not an object


async def test_exists(store: ObjectStore):
    await store.put("a/b/c.bin", b"x")
    assert await store.exists("a/b/c.bin")
    assert not await store.exists("a/b/c")
    assert not await store.exists("a/b")


async def test_list_is_by_prefix_not_by_folder(store: ObjectStore):
    keys = ["a/b/c", "a/b/d/e", "a/bc", "a/bcd/e", "a/c", "ab", "b/a", "z"]
    for key in reversed(keys):
        await store.put(key, key.encode())
    assert await store.list() == keys
    assert await store.list("a/b") == ["a/b/c", "a/b/d/e", "a/bc", "a/bcd/e"]
    assert await store.list("a/b/") == ["a/b/c", "a/b/d/e"]
    assert await store.list("a/bc") == ["a/bc", "a/bcd/e"]
    assert await store.list("a") == ["a/b/c", "a/b/d/e", "a/bc", "a/bcd/e", "a/c", "ab"]
    assert await store.list("z") == ["z"]
    assert await store.list("y") == []
    assert await store.list("a/x/") == []


async def test_list_sees_only_its_own_root(make_store: StoreFactory):
    """A store whose root extends this one's name (`<root>x`) is not inside this one."""
    mine, sibling = make_store(""), make_store("x")
    await sibling.put("k", b"theirs")
    await mine.put("k", b"mine")
    assert await mine.list() == ["k"]
    assert await mine.get("k") == b"mine"
    assert await sibling.get("k") == b"theirs"


async def test_delete_is_idempotent(store: ObjectStore):
    await store.put("d/one", b"1")
    await store.put("d/two", b"2")
    await store.delete("d/one")
    assert not await store.exists("d/one")
    await store.delete("d/one")
    await store.delete("d/never")
    assert await store.list("d/") == ["d/two"]
    with pytest.raises(ObjectNotFound):
        await store.get("d/one")


@pytest.mark.parametrize("key", ["", "/abs", "a//b", "a/../b", "..", "./a", "a/", "a/."])
async def test_invalid_keys_are_rejected(store: ObjectStore, key: str):
    with pytest.raises(InvalidKey):
        await store.put(key, b"x")
    with pytest.raises(InvalidKey):
        await store.get(key)
    with pytest.raises(InvalidKey):
        await store.exists(key)
    with pytest.raises(InvalidKey):
        await store.delete(key)
    assert await store.list() == []


async def test_many_keys(store: ObjectStore):
    keys = sorted(f"many/{i % 5}/part-{i:04d}.bin" for i in range(60))
    await asyncio.gather(*(store.put(key, key.encode()) for key in keys))
    assert await store.list() == keys
    assert await store.list("many/3/") == [key for key in keys if key.startswith("many/3/")]
    assert len(await store.list("many/3/")) == 12


async def test_binary_and_empty_objects(store: ObjectStore):
    data = bytes(range(256)) * 4096 + b"\x00\xff"  # 1 MiB and a bit, every byte value
    await store.put("bin/blob", data)
    await store.put("bin/empty", b"")
    assert await store.get("bin/blob") == data
    assert await store.get("bin/empty") == b""
    assert await store.exists("bin/empty")


async def test_keys_with_partition_names_and_unicode(store: ObjectStore):
    keys = ["stats/forum/dt=2026-11-29/hour=06/minute=45/part-demo.parquet", "unicode/ü-€-日本.txt", "sp ace/+plus"]
    for key in keys:
        await store.put(key, key.encode())
    for key in keys:
        assert await store.get(key) == key.encode()
    assert await store.list() == sorted(keys)


def parquet_bytes(tmp_path: Path, name: str, sql: str) -> bytes:
    path = tmp_path / f"{name}.parquet"
    with duckdb.connect() as con:
        con.execute(f"COPY ({sql}) TO '{path}' (FORMAT parquet)")
    return path.read_bytes()


async def test_duckdb_reads_objects_by_glob(store: ObjectStore, tmp_path):
    layout = "stats/forum/dt=2026-11-29/hour=06/minute={minute}/part-demo.parquet"
    for minute in (44, 45):
        data = parquet_bytes(tmp_path, str(minute), f"SELECT {minute} AS m, range AS n FROM range(5)")
        await store.put(layout.format(minute=minute), data, content_type="application/vnd.apache.parquet")
    await store.put("other/part-demo.parquet", parquet_bytes(tmp_path, "other", "SELECT 99 AS m, 0 AS n"))

    def query() -> list[tuple]:
        with connect(store) as con:
            source = f"read_parquet('{store.location('stats/forum/**/*.parquet')}', hive_partitioning = true)"
            sql = f"SELECT minute, count(*), sum(n), min(m) FROM {source} GROUP BY 1 ORDER BY 1"
            return con.execute(sql).fetchall()

    assert await asyncio.to_thread(query) == [(44, 5, 10, 44), (45, 5, 10, 45)]


async def test_ping(store: ObjectStore):
    await store.ping()
