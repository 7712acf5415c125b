"""The production object store: a bucket (and a key prefix) on Amazon S3 or any S3-compatible
server, through boto3.

URL: `s3://BUCKET[/PREFIX][?endpoint=http://HOST:PORT&region=REGION&access_key=ID&secret_key=KEY]`.
Without `endpoint` the store talks to AWS; with one, it addresses buckets by path
(`http://HOST:PORT/BUCKET/KEY`), as S3-compatible servers expect. Credentials come from the
URL's `access_key`/`secret_key` (meant for development servers) or else from boto3's standard
chain (`AWS_ACCESS_KEY_ID`/`AWS_SECRET_ACCESS_KEY`, `~/.aws`, an instance role).

boto3 is blocking: one client (thread-safe, with its own connection pool) serves every call,
each run in a worker thread.
"""

from __future__ import annotations

import asyncio
import builtins
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import boto3
from botocore.config import Config
from botocore.credentials import ReadOnlyCredentials
from botocore.exceptions import ClientError

from threadcast.store.objects.base import ObjectNotFound, ObjectStore, check_key

OPTIONS = ("endpoint", "region", "access_key", "secret_key")
NOT_FOUND = {"404", "NoSuchKey", "NotFound"}
ALREADY_THERE = {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}


@dataclass(frozen=True, slots=True)
class S3Location:
    """What an `s3://` URL says."""

    bucket: str
    prefix: str
    """Key prefix inside the bucket, without slashes at either end ("" for the whole bucket)."""
    endpoint: str | None
    region: str
    access_key: str | None
    secret_key: str | None

    @classmethod
    def parse(cls, url: str) -> S3Location:
        parts = urlsplit(url)
        if parts.scheme != "s3" or not parts.netloc:
            raise ValueError(f"expected s3://BUCKET[/PREFIX][?endpoint=...&region=...], got {redact(url)!r}")
        options = {key: values[-1] for key, values in parse_qs(parts.query).items()}
        unknown = set(options) - set(OPTIONS)
        if unknown:
            raise ValueError(f"unknown option(s) {sorted(unknown)} in {redact(url)!r}: use {', '.join(OPTIONS)}")
        if ("access_key" in options) != ("secret_key" in options):
            raise ValueError(f"give both access_key and secret_key, or neither, in {redact(url)!r}")
        prefix = parts.path.strip("/")
        if prefix:
            check_key(prefix)
        return cls(
            bucket=parts.netloc,
            prefix=prefix,
            endpoint=options.get("endpoint"),
            region=options.get("region", "us-east-1"),
            access_key=options.get("access_key"),
            secret_key=options.get("secret_key"),
        )


def redact(url: str) -> str:
    """The URL with its `secret_key` hidden, for messages and `ObjectStore.url`."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if "secret_key" not in query:
        return url
    query["secret_key"] = ["***"]
    return urlunsplit(parts._replace(query=urlencode(query, doseq=True, safe=":/*")))


def _error_code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", ""))


class S3Store(ObjectStore):
    def __init__(self, url: str, *, page_size: int = 1000) -> None:
        """`page_size`: keys asked for per listing request (S3 answers at most 1000)."""
        self.where = S3Location.parse(url)
        self.url = redact(url)
        self.page_size = page_size
        self._session = boto3.session.Session(
            aws_access_key_id=self.where.access_key,
            aws_secret_access_key=self.where.secret_key,
            region_name=self.where.region,
        )
        self._client: Any = None
        self._starting = asyncio.Lock()

    async def start(self) -> None:
        if self._client is not None:
            return
        async with self._starting:
            if self._client is None:
                client = await asyncio.to_thread(self._make_client)
                try:
                    await asyncio.to_thread(self._ensure_bucket, client)
                except BaseException:
                    client.close()
                    raise
                self._client = client

    def _make_client(self) -> Any:
        config = Config(
            s3={"addressing_style": "path" if self.where.endpoint else "auto"},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=30,
        )
        return self._session.client("s3", endpoint_url=self.where.endpoint, config=config)

    def _ensure_bucket(self, client: Any) -> None:
        """Create the bucket when it is missing (the first start on a fresh server)."""
        try:
            client.head_bucket(Bucket=self.where.bucket)
            return
        except ClientError as error:
            if _error_code(error) not in NOT_FOUND | {"NoSuchBucket"}:
                raise
        create: dict[str, Any] = {"Bucket": self.where.bucket}
        if self.where.region != "us-east-1":
            create["CreateBucketConfiguration"] = {"LocationConstraint": self.where.region}
        try:
            client.create_bucket(**create)
        except ClientError as error:
            if _error_code(error) not in ALREADY_THERE:
                raise

    def _key(self, key: str) -> str:
        check_key(key)
        return f"{self.where.prefix}/{key}" if self.where.prefix else key

    async def put(self, key: str, data: bytes, content_type: str = "application/octet-stream") -> None:
        full = self._key(key)
        await self.start()
        await asyncio.to_thread(
            self._client.put_object, Bucket=self.where.bucket, Key=full, Body=data, ContentType=content_type
        )

    async def get(self, key: str) -> bytes:
        full = self._key(key)
        await self.start()
        return await asyncio.to_thread(self._get, full, key)

    def _get(self, full: str, key: str) -> bytes:
        try:
            response = self._client.get_object(Bucket=self.where.bucket, Key=full)
        except ClientError as error:
            if _error_code(error) in NOT_FOUND:
                raise ObjectNotFound(key) from None
            raise
        with response["Body"] as body:
            return body.read()

    async def exists(self, key: str) -> bool:
        full = self._key(key)
        await self.start()
        return await asyncio.to_thread(self._exists, full)

    def _exists(self, full: str) -> bool:
        try:
            self._client.head_object(Bucket=self.where.bucket, Key=full)
        except ClientError as error:
            if _error_code(error) in NOT_FOUND:
                return False
            raise
        return True

    async def list(self, prefix: str = "") -> list[str]:
        await self.start()
        return await asyncio.to_thread(self._list, prefix)

    def _list(self, prefix: str) -> builtins.list[str]:
        root = f"{self.where.prefix}/" if self.where.prefix else ""
        pages = self._client.get_paginator("list_objects_v2").paginate(
            Bucket=self.where.bucket,
            Prefix=root + prefix,
            PaginationConfig={"PageSize": self.page_size},
        )
        keys = [item["Key"][len(root) :] for page in pages for item in page.get("Contents", ())]
        return sorted(keys)

    async def delete(self, key: str) -> None:
        full = self._key(key)
        await self.start()
        await asyncio.to_thread(self._client.delete_object, Bucket=self.where.bucket, Key=full)

    def location(self, key_or_glob: str) -> str:
        root = f"{self.where.bucket}/{self.where.prefix}" if self.where.prefix else self.where.bucket
        return f"s3://{root}/{key_or_glob}"

    def credentials(self) -> ReadOnlyCredentials | None:
        """The credentials the client signs with (from the URL or boto3's chain), for other
        readers of the bucket such as DuckDB; None when there are none."""
        found = self._session.get_credentials()
        return found.get_frozen_credentials() if found is not None else None

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await asyncio.to_thread(client.close)
