"""A real S3 server for tests: moto in server mode, a subprocess spoken to over HTTP by boto3,
exactly as a bucket on AWS or MinIO would be."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from typing import Any

import boto3  # type: ignore[import-untyped]
import pytest

from server.archive.storage import S3Storage
from tests import services

S3_ACCESS_KEY = "testing-key"
S3_SECRET_KEY = "testing-secret"


@pytest.fixture(scope="module")
def s3_endpoint() -> Iterator[str]:
    port = services.free_port()
    env = {**os.environ, "AWS_ACCESS_KEY_ID": S3_ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": S3_SECRET_KEY}
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
    )
    try:
        services.wait_for_port(port, timeout=30)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.kill()
        proc.wait()


def new_bucket(endpoint: str) -> str:
    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    client: Any = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=S3_ACCESS_KEY,
        aws_secret_access_key=S3_SECRET_KEY,
    )
    client.create_bucket(Bucket=bucket)
    return bucket


def s3_storage(endpoint: str) -> S3Storage:
    """A new, empty bucket on the server."""
    return S3Storage(
        new_bucket(endpoint),
        endpoint_url=endpoint,
        access_key_id=S3_ACCESS_KEY,
        secret_access_key=S3_SECRET_KEY,
    )
