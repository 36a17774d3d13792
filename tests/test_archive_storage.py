"""Archive storage: one behavioural contract, run on a directory and on a real S3 server.

The S3 server is moto in server mode, started here as a subprocess and spoken to over HTTP
by boto3, exactly as a bucket on AWS or MinIO would be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr

from server.archive.storage import (
    InvalidKey,
    LocalStorage,
    ObjectNotFound,
    ObjectStorage,
    S3Storage,
    storage_from_settings,
)
from server.core.config import ConfigurationError, Settings
from tests.s3 import s3_endpoint, s3_storage

__all__ = ["s3_endpoint"]  # a fixture, used by name


def settings_with(**values: Any) -> Settings:
    return Settings(
        DATABASE_URL="postgresql+asyncpg://metricis@db/metricis",
        REDIS_URL="redis://r:6379/0",
        **values,
    )


@pytest.fixture(params=["local", pytest.param("s3", marks=pytest.mark.slow)])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> ObjectStorage:
    if request.param == "local":
        return LocalStorage(tmp_path / "archive")
    endpoint: str = request.getfixturevalue("s3_endpoint")
    return s3_storage(endpoint)


def test_round_trip_keeps_the_bytes_exactly(storage: ObjectStorage) -> None:
    data = bytes(range(256)) * 40 + b'{"a": 1}\r\n\x00'
    key = "studies/s1/participants/p1/sessions/x/submissions/a.json"
    assert not storage.exists(key)
    storage.put(key, data)
    assert storage.exists(key)
    assert storage.get(key) == data
    storage.put(key, b"replaced")
    assert storage.get(key) == b"replaced"
    storage.put("empty", b"")
    assert storage.get("empty") == b""


def test_listing_is_sorted_and_by_prefix(storage: ObjectStorage) -> None:
    keys = ["b/2.json", "a/z.json", "a-b/1.json", "a/b/c.json", "ab.json", "a/a.json"]
    for key in keys:
        storage.put(key, key.encode())
    assert list(storage.list()) == sorted(keys)
    assert list(storage.list("a/")) == ["a/a.json", "a/b/c.json", "a/z.json"]
    # A plain string prefix, as in S3: "a" also matches "a-b/..." and "ab.json".
    assert list(storage.list("a")) == [
        "a-b/1.json",
        "a/a.json",
        "a/b/c.json",
        "a/z.json",
        "ab.json",
    ]
    assert list(storage.list("a/b")) == ["a/b/c.json"]
    assert list(storage.list("nothing/")) == []


@pytest.mark.parametrize(
    "key",
    [
        "../outside",
        "a/../../outside",
        "/etc/passwd",
        "a//b",
        "a/./b",
        "a/.hidden",
        "a\\b",
        "",
        "a/",
    ],
)
def test_keys_that_could_escape_are_refused(storage: ObjectStorage, key: str) -> None:
    with pytest.raises(InvalidKey):
        storage.put(key, b"x")
    with pytest.raises(InvalidKey):
        storage.get(key)
    with pytest.raises(InvalidKey):
        storage.exists(key)


def test_prefixes_that_could_escape_are_refused(storage: ObjectStorage) -> None:
    for prefix in ("../", "a/../../", "/abs"):
        with pytest.raises(InvalidKey):
            storage.list(prefix)


def test_missing_object_is_not_found(storage: ObjectStorage) -> None:
    with pytest.raises(ObjectNotFound) as info:
        storage.get("studies/none/x.json")
    assert info.value.key == "studies/none/x.json"
    assert not storage.exists("studies/none/x.json")
    storage.put("studies/dir/x.json", b"1")
    # A "directory" is not an object.
    assert not storage.exists("studies/dir")
    with pytest.raises(ObjectNotFound):
        storage.get("studies/dir")


def test_local_writes_leave_no_temporary_files(tmp_path: Path) -> None:
    storage = LocalStorage(tmp_path)
    for i in range(5):
        storage.put("a/b.json", str(i).encode())
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["b.json"]
    # A temporary file left by a crash is never listed.
    (tmp_path / "a" / ".b.json.123.tmp").write_bytes(b"partial")
    assert list(storage.list()) == ["a/b.json"]


def test_local_refuses_a_symlink_out_of_the_root(tmp_path: Path) -> None:
    root = tmp_path / "root"
    outside = tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    (root / "link").symlink_to(outside, target_is_directory=True)
    storage = LocalStorage(root)
    with pytest.raises(InvalidKey):
        storage.put("link/x.json", b"x")
    assert list(outside.iterdir()) == []


def test_storage_from_settings_picks_the_backend(tmp_path: Path) -> None:
    local = storage_from_settings(settings_with(ARCHIVE_DIR=str(tmp_path / "a")))
    assert isinstance(local, LocalStorage) and local.root == tmp_path / "a"

    s3 = storage_from_settings(
        settings_with(
            ARCHIVE_BACKEND="s3",
            ARCHIVE_S3_BUCKET="bucket",
            ARCHIVE_S3_ENDPOINT_URL="http://127.0.0.1:9",
            ARCHIVE_S3_ACCESS_KEY_ID="id",
            ARCHIVE_S3_SECRET_ACCESS_KEY=SecretStr("very-secret-value"),
        )
    )
    assert isinstance(s3, S3Storage) and s3.bucket == "bucket"
    assert "very-secret-value" not in repr(s3)

    with pytest.raises(ConfigurationError, match="ARCHIVE_S3_BUCKET"):
        storage_from_settings(settings_with(ARCHIVE_BACKEND="s3"))
    with pytest.raises(ConfigurationError, match="go together"):
        storage_from_settings(
            settings_with(
                ARCHIVE_BACKEND="s3", ARCHIVE_S3_BUCKET="b", ARCHIVE_S3_ACCESS_KEY_ID="id"
            )
        )


def test_archive_secret_is_not_shown_in_settings() -> None:
    settings = settings_with(ARCHIVE_S3_SECRET_ACCESS_KEY=SecretStr("very-secret-value"))
    assert "very-secret-value" not in repr(settings)
    assert "very-secret-value" not in str(settings.model_dump())
