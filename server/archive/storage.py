"""Where archived objects live: a local directory or an S3-compatible bucket.

Synchronous on purpose: callers are workers and the CLI, and async code runs these calls
through `asyncio.to_thread`. Keys are `/`-separated segments; a segment may not be empty or
start with a dot (so no `.`, `..` or hidden files), and no key may contain a backslash or a
control character. Both implementations refuse the same keys, so a key that works locally
works in a bucket too.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Protocol

import structlog

from server.core.config import ConfigurationError, Settings

log = structlog.get_logger(__name__)


class ObjectNotFound(LookupError):
    """No object under this key."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


class InvalidKey(ValueError):
    """A key that could name something outside the store, or that some store cannot hold."""


class ObjectStorage(Protocol):
    def put(self, key: str, data: bytes) -> None:
        """Store data under key, replacing any object there; readers never see half of it."""

    def get(self, key: str) -> bytes:
        """The object's bytes; raises ObjectNotFound."""

    def put_file(self, key: str, path: Path) -> None:
        """Store a file's contents under key without reading it into memory; whole or not at
        all, as put."""

    def stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        """The object's bytes in chunks; raises ObjectNotFound before the first."""

    def exists(self, key: str) -> bool: ...

    def list(self, prefix: str = "") -> Iterator[str]:
        """Every key starting with prefix (a plain string prefix), in sorted order."""


def check_key(key: str) -> str:
    if not key or len(key) > 1024:
        raise InvalidKey("a key is 1 to 1024 characters")
    if "\\" in key or any(ord(ch) < 0x20 or ord(ch) == 0x7F for ch in key):
        raise InvalidKey("a key may not contain backslashes or control characters")
    for segment in key.split("/"):
        if not segment or segment.startswith("."):
            raise InvalidKey("a key segment may not be empty or start with a dot")
    return key


def check_prefix(prefix: str) -> str:
    """A prefix is empty, or a key, or a key followed by one slash."""
    if prefix:
        check_key(prefix.removesuffix("/"))
    return prefix


class LocalStorage:
    """Objects as files under root: written to a temporary file, fsynced, then renamed."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"LocalStorage({str(self.root)!r})"

    def _path(self, key: str) -> Path:
        check_key(key)
        root = self.root.resolve()
        path = (root / key).resolve()
        # Segments are already checked; this catches a symlink inside root pointing out of it.
        if not path.is_relative_to(root) or path == root:
            raise InvalidKey("the key leads outside the archive directory")
        return path

    def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        # A dot-name in the same directory: never listed, and the rename stays on one filesystem.
        fd, tmp_name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as tmp:
                tmp.write(data)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise
        # The rename itself is durable only once the directory is synced.
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)

    def put_file(self, key: str, path: Path) -> None:
        target = self._path(key)
        target.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "wb") as tmp, open(path, "rb") as src:
                while block := src.read(1 << 20):
                    tmp.write(block)
                tmp.flush()
                os.fsync(tmp.fileno())
            os.replace(tmp_name, target)
        except BaseException:
            Path(tmp_name).unlink(missing_ok=True)
            raise

    def stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFound(key)
        return self._chunks(path, chunk_size)

    @staticmethod
    def _chunks(path: Path, chunk_size: int) -> Iterator[bytes]:
        with open(path, "rb") as handle:
            while block := handle.read(chunk_size):
                yield block

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise ObjectNotFound(key) from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def list(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)
        root = self.root.resolve()
        # Walk only the directory the prefix is certainly inside of.
        start = root.joinpath(*prefix.split("/")[:-1]) if "/" in prefix else root
        if not start.is_dir():
            return iter(())
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            relative = Path(dirpath).relative_to(root).as_posix()
            for name in filenames:
                if name.startswith("."):
                    continue
                key = name if relative == "." else f"{relative}/{name}"
                if key.startswith(prefix):
                    keys.append(key)
        return iter(sorted(keys))


def _boto3() -> Any:
    # boto3 ships no type information; everything it returns is Any at this boundary.
    import boto3  # type: ignore[import-untyped]

    return boto3


def _error_code(exc: Exception) -> str:
    response: Any = getattr(exc, "response", None) or {}
    return str(response.get("Error", {}).get("Code", ""))


_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


class S3Storage:
    """Objects in an S3 bucket (AWS, MinIO, or any S3-compatible server via endpoint_url).

    Credentials: the given pair, or boto3's default chain when none is given.
    """

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        access_key_id: str | None = None,
        secret_access_key: str | None = None,
    ) -> None:
        if not bucket:
            raise ConfigurationError("the S3 archive needs a bucket name (ARCHIVE_S3_BUCKET)")
        boto3 = _boto3()
        from botocore.config import Config  # type: ignore[import-untyped]

        # Path-style addressing for custom endpoints: MinIO and friends rarely do vhosts.
        config = Config(
            retries={"max_attempts": 5, "mode": "standard"},
            s3={"addressing_style": "path" if endpoint_url else "auto"},
        )
        credentials: dict[str, str] = {}
        if access_key_id and secret_access_key:
            credentials = {
                "aws_access_key_id": access_key_id,
                "aws_secret_access_key": secret_access_key,
            }
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self._client: Any = boto3.session.Session().client(
            "s3", endpoint_url=endpoint_url, region_name=region, config=config, **credentials
        )

    def __repr__(self) -> str:
        return f"S3Storage(bucket={self.bucket!r}, endpoint_url={self.endpoint_url!r})"

    def put(self, key: str, data: bytes) -> None:
        # A PUT replaces the object whole: S3 readers never see a partial object.
        self._client.put_object(Bucket=self.bucket, Key=check_key(key), Body=data)

    def put_file(self, key: str, path: Path) -> None:
        # Multipart for large files; the object appears only once the upload completes.
        self._client.upload_file(str(path), self.bucket, check_key(key))

    def stream(self, key: str, chunk_size: int = 1 << 20) -> Iterator[bytes]:
        from botocore.exceptions import ClientError  # type: ignore[import-untyped]

        try:
            response = self._client.get_object(Bucket=self.bucket, Key=check_key(key))
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                raise ObjectNotFound(key) from None
            raise
        return iter(response["Body"].iter_chunks(chunk_size))

    def get(self, key: str) -> bytes:
        from botocore.exceptions import ClientError

        try:
            response = self._client.get_object(Bucket=self.bucket, Key=check_key(key))
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                raise ObjectNotFound(key) from None
            raise
        body: bytes = response["Body"].read()
        return body

    def exists(self, key: str) -> bool:
        from botocore.exceptions import ClientError

        try:
            self._client.head_object(Bucket=self.bucket, Key=check_key(key))
        except ClientError as exc:
            if _error_code(exc) in _NOT_FOUND:
                return False
            raise
        return True

    def list(self, prefix: str = "") -> Iterator[str]:
        check_prefix(prefix)  # now, not at the first next()
        return self._keys(prefix)

    def _keys(self, prefix: str) -> Iterator[str]:
        paginator = self._client.get_paginator("list_objects_v2")
        # S3 lists keys in UTF-8 byte order, which is the code point order of sorted().
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for item in page.get("Contents", ()):
                yield str(item["Key"])


def storage_from_settings(settings: Settings) -> ObjectStorage:
    if settings.ARCHIVE_BACKEND == "s3":
        secret = settings.ARCHIVE_S3_SECRET_ACCESS_KEY.get_secret_value()
        if bool(settings.ARCHIVE_S3_ACCESS_KEY_ID) != bool(secret):
            raise ConfigurationError(
                "ARCHIVE_S3_ACCESS_KEY_ID and ARCHIVE_S3_SECRET_ACCESS_KEY go together: "
                "set both, or neither for boto3's default credential chain"
            )
        return S3Storage(
            settings.ARCHIVE_S3_BUCKET,
            endpoint_url=settings.ARCHIVE_S3_ENDPOINT_URL or None,
            region=settings.ARCHIVE_S3_REGION,
            access_key_id=settings.ARCHIVE_S3_ACCESS_KEY_ID or None,
            secret_access_key=secret or None,
        )
    return LocalStorage(Path(settings.ARCHIVE_DIR))
