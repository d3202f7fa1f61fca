"""The server for the OpenAPI suite: COHOST_SDK_URL (tests/sdk/run.sh starts it with
`--max-tokens 4`), or one started here with the same ceiling. It has to exist before the test
module is imported, because schemathesis builds its tests from the schema at import time."""

import collections
import os
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from cohost_server import Server  # noqa: E402

_server = None
# Filled by the test: (operation, status) -> count, for the closing summary.
TOTALS: collections.Counter = collections.Counter()


def pytest_configure(config):
    global _server
    if not os.environ.get("COHOST_SDK_URL"):
        _server = Server("--max-tokens", "4")
        os.environ["COHOST_SDK_URL"] = _server.url


def pytest_unconfigure(config):
    if _server is not None:
        _server.stop()


def pytest_terminal_summary(terminalreporter):
    if not TOTALS:
        return
    terminalreporter.section("schemathesis requests sent (operation, status)")
    by_operation = collections.defaultdict(dict)
    for (operation, status), count in sorted(TOTALS.items()):
        by_operation[operation][status] = count
    for operation, statuses in by_operation.items():
        total = sum(statuses.values())
        terminalreporter.write_line(f"{operation}: {total} requests, by status {statuses}")
    terminalreporter.write_line(f"total: {sum(TOTALS.values())} requests")
