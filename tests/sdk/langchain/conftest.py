"""Fixtures for the LangChain suite: the shared open server (COHOST_SDK_URL from tests/sdk/run.sh,
or started here)."""

import os
import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from cohost_server import DEFAULT_MODEL_NAME, Server  # noqa: E402

MODEL = DEFAULT_MODEL_NAME


@pytest.fixture(scope="session")
def base_url():
    url = os.environ.get("COHOST_SDK_URL")
    if url:
        yield url
        return
    with Server() as server:
        yield server.url
