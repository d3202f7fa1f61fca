"""Fixtures for the Python SDK suite: the shared open server (from COHOST_SDK_URL, which
tests/sdk/run.sh sets, or started here), clients, and a guard that fails any test during which the
SDK logged that it skipped or could not process a stream event."""

import logging
import sys
import pathlib

import cohere
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from cohost_server import DEFAULT_MODEL_NAME, Server, shared_server_url  # noqa: E402,F401

MODEL = DEFAULT_MODEL_NAME


@pytest.fixture(scope="session")
def base_url():
    yield from shared_server_url()


@pytest.fixture(scope="session")
def co(base_url):
    # api_key="" is how a user talks to an open server: the SDK then sends no Authorization.
    return cohere.ClientV2(api_key="", base_url=base_url, timeout=120)


class _Recorder(logging.Handler):
    def __init__(self):
        super().__init__(level=logging.WARNING)
        self.records = []

    def emit(self, record):
        self.records.append(record)


@pytest.fixture(autouse=True)
def no_skipped_stream_events():
    """The SDK drops stream events it cannot validate with only a log line on the root logger
    (`Skipping SSE event ...`) or reports `Unexpected error processing SSE event`: either means
    a client silently missed part of the reply, so it fails the test."""
    recorder = _Recorder()
    root = logging.getLogger()
    root.addHandler(recorder)
    yield recorder
    root.removeHandler(recorder)
    bad = [
        r.getMessage()
        for r in recorder.records
        if "skipping" in r.getMessage().lower() or "sse event" in r.getMessage().lower()
    ]
    assert not bad, f"the SDK dropped stream events: {bad}"
