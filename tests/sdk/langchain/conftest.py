"""Fixtures for the LangChain suite: the shared open server (COHOST_SDK_URL from tests/sdk/run.sh,
or started here)."""

import pathlib
import sys

import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from cohost_server import DEFAULT_MODEL_NAME, Server, shared_server_url  # noqa: E402,F401

MODEL = DEFAULT_MODEL_NAME


@pytest.fixture(scope="session")
def base_url():
    yield from shared_server_url()
