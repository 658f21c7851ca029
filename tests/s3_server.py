"""An S3-compatible server for the tests: moto's, on a free loopback port, with one bucket."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import pytest


@contextlib.contextmanager
def moto_s3(bucket: str) -> Iterator[dict]:
    """A moto S3 server holding ``bucket``; yields the s3fs storage options that reach it."""
    s3fs = pytest.importorskip("s3fs", reason="s3fs (the s3:// filesystem) is not installed")
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    options = {"key": "testing", "secret": "testing", "endpoint_url": f"http://{host}:{port}"}
    s3fs.S3FileSystem(**options).mkdir(bucket)
    try:
        yield options
    finally:
        server.stop()
