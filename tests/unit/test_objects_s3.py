"""Opening object stores by URL, and what only S3 does: parsing `s3://` URLs, creating the
bucket on start, listing across pages. The server tests need `s3` in THREADCAST_TEST_BACKENDS
(the contract suite holds the rest: tests/contract/test_objects_contract.py)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import boto3
import pytest

from tests.conftest import selected_real_backends
from threadcast.store.objects import FolderStore, open_object_store
from threadcast.store.objects.s3 import S3Location, S3Store

needs_s3 = pytest.mark.skipif("s3" not in selected_real_backends(), reason="s3 is not selected")

DEV = "s3://bucket/some/prefix?endpoint=http://127.0.0.1:19000&region=eu-west-1&access_key=AK&secret_key=SK"


def test_folder_urls(tmp_path):
    assert isinstance(open_object_store("", tmp_path / "default"), FolderStore)
    assert open_object_store("", tmp_path / "default").root == (tmp_path / "default").resolve()
    assert open_object_store((tmp_path / "a b").as_uri(), tmp_path).root == (tmp_path / "a b").resolve()
    assert open_object_store(str(tmp_path / "plain"), tmp_path).root == (tmp_path / "plain").resolve()


@pytest.mark.parametrize("url", ["gs://bucket/x", "http://127.0.0.1:19000/bucket", "file://host/x", "s3:///nobucket"])
def test_unknown_urls_are_refused(url, tmp_path):
    with pytest.raises(ValueError):
        open_object_store(url, tmp_path)


def test_s3_url():
    store = open_object_store(DEV, Path("unused"))
    assert isinstance(store, S3Store)
    assert store.where == S3Location(
        bucket="bucket",
        prefix="some/prefix",
        endpoint="http://127.0.0.1:19000",
        region="eu-west-1",
        access_key="AK",
        secret_key="SK",
    )
    assert "SK" not in store.url and "secret_key=***" in store.url and "access_key=AK" in store.url
    assert store.location("stats/**/*.parquet") == "s3://bucket/some/prefix/stats/**/*.parquet"
    credentials = store.credentials()
    assert credentials is not None and (credentials.access_key, credentials.secret_key) == ("AK", "SK")


def test_s3_url_without_prefix_or_options():
    where = S3Location.parse("s3://bucket")
    assert (where.bucket, where.prefix, where.endpoint, where.region) == ("bucket", "", None, "us-east-1")
    assert S3Store("s3://bucket/").location("k") == "s3://bucket/k"


@pytest.mark.parametrize(
    "url",
    [
        "s3://bucket/p?endpiont=http://x&secret_key=SECRET",  # a typo is not ignored
        "s3://bucket/p?secret_key=SECRET",  # half a key pair
        "s3://bucket/a/../b?access_key=AK&secret_key=SECRET",
    ],
)
def test_bad_s3_urls(url):
    with pytest.raises(ValueError) as info:
        S3Location.parse(url)
    assert "SECRET" not in str(info.value)


def dev_url(bucket: str, prefix: str) -> str:
    """THREADCAST_TEST_S3_URL with another bucket and prefix."""
    parts = urlsplit(os.environ["THREADCAST_TEST_S3_URL"])
    return urlunsplit(parts._replace(netloc=bucket, path=f"/{prefix}"))


def raw_client(store: S3Store):  # type: ignore[no-untyped-def]
    """A plain boto3 client on the store's server, to look at the bucket from outside the store."""
    where = store.where
    return boto3.client(
        "s3",
        endpoint_url=where.endpoint,
        region_name=where.region,
        aws_access_key_id=where.access_key,
        aws_secret_access_key=where.secret_key,
    )


@pytest.mark.real
@needs_s3
async def test_start_creates_the_bucket():
    bucket = f"threadcast-test-{uuid.uuid4().hex[:12]}"
    store = S3Store(dev_url(bucket, "p"))
    client = raw_client(store)
    assert bucket not in {b["Name"] for b in client.list_buckets()["Buckets"]}
    try:
        await store.put("k", b"v")  # starts the store: creates the bucket
        assert await store.get("k") == b"v"
        assert client.get_object(Bucket=bucket, Key="p/k")["Body"].read() == b"v"
        await S3Store(dev_url(bucket, "p")).start()  # the bucket is there already: fine
    finally:
        await store.delete("k")
        await store.close()
        client.delete_bucket(Bucket=bucket)


@pytest.mark.real
@needs_s3
async def test_listing_spans_pages():
    prefix = f"pages-{uuid.uuid4().hex[:12]}"
    store = S3Store(dev_url(urlsplit(os.environ["THREADCAST_TEST_S3_URL"]).netloc, prefix), page_size=4)
    keys = [f"k{i:02d}" for i in range(10)]
    try:
        for key in keys:
            await store.put(key, b"")
        # The server answers 4 keys per request, so the store's listing took three requests.
        page = raw_client(store).list_objects_v2(Bucket=store.where.bucket, Prefix=f"{prefix}/", MaxKeys=4)
        assert page["KeyCount"] == 4 and page["IsTruncated"]
        assert await store.list() == keys
        assert await store.list("k0") == keys[:10]
        assert await store.list("k1") == []
    finally:
        for key in keys:
            await store.delete(key)
        await store.close()
