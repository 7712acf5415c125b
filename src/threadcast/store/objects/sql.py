"""DuckDB connections that read a store's objects where they are: `store.location(glob)` names
them (`read_parquet('<location>')`), a local path for a folder, an `s3://` URL for S3.

For S3, DuckDB's `httpfs` extension is loaded from the `duckdb-extension-httpfs` package (a
copy of DuckDB's signed extension for the pinned DuckDB version), never downloaded: extension
auto-install is off, so a missing extension fails at once instead of reaching for the network.
The connection gets an S3 secret scoped to the store's bucket, with its endpoint, region,
credentials and path-style addressing.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

import duckdb

from threadcast.store.objects.base import ObjectStore

if TYPE_CHECKING:
    from threadcast.store.objects.s3 import S3Store

CONFIG = {"autoinstall_known_extensions": "false"}


def connect(store: ObjectStore) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB connection that can read `store.location(...)`. The caller closes it."""
    con = duckdb.connect(config=CONFIG)
    try:
        from threadcast.store.objects.s3 import S3Store
    except ImportError:  # boto3 missing: no store can be an S3Store
        return con
    if isinstance(store, S3Store):
        try:
            _read_s3(con, store)
        except BaseException:
            con.close()
            raise
    return con


def httpfs_extension() -> Path:
    """The packaged `httpfs` extension built for the DuckDB version in use."""
    import duckdb_extension_httpfs

    folder = resources.files(duckdb_extension_httpfs) / "extensions" / f"v{duckdb.__version__}"
    path = Path(str(folder / "httpfs.duckdb_extension"))
    if not path.is_file():
        raise RuntimeError(
            f"duckdb-extension-httpfs has no httpfs for DuckDB {duckdb.__version__} ({path}): "
            "install the duckdb-extension-httpfs version that matches duckdb"
        )
    return path


def _read_s3(con: duckdb.DuckDBPyConnection, store: S3Store) -> None:
    con.execute(f"LOAD {_quote(str(httpfs_extension()))}")
    where = store.where
    options = {
        "TYPE": "s3",
        "SCOPE": _quote(f"s3://{where.bucket}"),
        "REGION": _quote(where.region),
    }
    credentials = store.credentials()
    if credentials is not None and credentials.access_key and credentials.secret_key:
        options["KEY_ID"] = _quote(credentials.access_key)
        options["SECRET"] = _quote(credentials.secret_key)
        if credentials.token:
            options["SESSION_TOKEN"] = _quote(credentials.token)
    if where.endpoint:
        endpoint = urlsplit(where.endpoint)
        options["ENDPOINT"] = _quote(endpoint.netloc)
        options["USE_SSL"] = "true" if endpoint.scheme == "https" else "false"
        options["URL_STYLE"] = "'path'"
    body = ", ".join(f"{name} {value}" for name, value in options.items())
    con.execute(f"CREATE SECRET threadcast_store ({body})")


def _quote(value: str) -> str:
    """A SQL string literal (DuckDB's CREATE SECRET takes no parameters)."""
    return "'" + value.replace("'", "''") + "'"
