"""Start-up and shut-down of the `cimtwin serve` process a benchmark measures.

The benchmarks start the API in its own process group (uvicorn and its workers), wait for
/healthz, and stop the whole group at the end, whatever happened in between.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import httpx

#: seconds the API has to answer /healthz after it is started
START_TIMEOUT_S = 90


def wait_until_healthy(proc: subprocess.Popen, port: int) -> subprocess.Popen:
    """``proc`` once /healthz on ``port`` answers 200; exits the benchmark with the reason
    (the server's last error output when it was piped) when it dies or stays silent."""
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = proc.stderr.read().decode()[-3000:] if proc.stderr else ""
            sys.exit(f"the API exited while starting{': ' + tail if tail else ''}")
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2).status_code == 200:
                return proc
        except httpx.HTTPError:
            pass
        time.sleep(0.3)
    stop_server(proc)
    sys.exit(f"the API did not answer /healthz within {START_TIMEOUT_S} s")


def stop_server(proc: subprocess.Popen) -> None:
    """Stop the server a benchmark started (its own process group: uvicorn and workers)."""
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
