"""moto's S3 server on loopback for the tests that read and write `s3://` (tests/integration/test_s3.py,
tests/ray/test_ray_s3.py): one bucket, credentials that are dummies, nothing outside the test answering for them."""

from __future__ import annotations

from collections.abc import Iterator
import contextlib
import logging
import os
import socket
from typing import Any

import pytest

moto_server = pytest.importorskip("moto.server")
s3fs = pytest.importorskip("s3fs")

DUMMY_CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
# Nothing outside the test may answer for credentials: no ~/.aws files, no instance metadata service.
ISOLATED = {
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextlib.contextmanager
def moto_s3(bucket: str) -> Iterator[Any]:
    """A moto S3 server on 127.0.0.1 holding `bucket`, found by s3fs (and by child processes) through AWS_ENDPOINT_URL
    while the block runs; yields an s3fs filesystem on it."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in {**DUMMY_CREDENTIALS, **ISOLATED, "AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}"}.items():
                patch.setenv(name, value)
            s3fs.S3FileSystem.clear_instance_cache()
            fs = s3fs.S3FileSystem(skip_instance_cache=True)
            fs.mkdir(bucket)
            yield fs
            s3fs.S3FileSystem.clear_instance_cache()
    finally:
        server.stop()
