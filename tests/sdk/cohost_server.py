"""Start and stop the real `cohost serve` binary for the SDK suites (standard library only, so the
Python and LangChain virtual environments can both import it).

`Server(...)` starts the binary on a free port with the default model, reads the bound address
from its log, waits for `GET /ready`, and stops it in `stop()` (also when the test process dies:
the child gets SIGTERM through PR_SET_PDEATHSIG on Linux).
"""

import ctypes
import os
import pathlib
import signal
import subprocess
import tempfile
import time
import urllib.error
import urllib.request

REPO = pathlib.Path(__file__).resolve().parents[2]
BINARY = pathlib.Path(os.environ.get("COHOST_BIN", REPO / "target" / "debug" / "cohost"))
DEFAULT_MODEL_NAME = "SmolLM2-135M-Instruct.Q4_1"
# Where the default model is: the folder the caller (tests/sdk/run.sh, scripts/test-all.sh) names,
# else the repository's models/cache (where models/fetch-default.sh puts it).
MODEL_DIR = os.environ.get("COHOST_MODEL_DIR") or str(REPO / "models" / "cache")
EMBED_MODEL_NAME = "all-MiniLM-L6-v2"
# The shared server's models: the default chat model and the embedding model next to it
# (models/fetch-default.sh, models/fetch-minilm.sh), as one RAG application would use them.
SHARED_MODELS = [
    pathlib.Path(MODEL_DIR) / "SmolLM2-135M-Instruct.Q4_1.gguf",
    pathlib.Path(MODEL_DIR) / EMBED_MODEL_NAME,
]
READY_TIMEOUT_S = 180


def _die_with_parent():
    # Linux: the server gets SIGTERM when the process that started it goes away.
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except OSError:
        pass


class Server:
    """One running `cohost serve`; `url` is `http://127.0.0.1:PORT`."""

    def __init__(self, *flags: str, env: dict | None = None):
        if not BINARY.is_file():
            raise RuntimeError(f"{BINARY} is missing: build it with `cargo build --bin cohost`")
        self.log_file = tempfile.NamedTemporaryFile(
            prefix="cohost-sdk-", suffix=".log", delete=False
        )
        child_env = {
            k: v
            for k, v in os.environ.items()
            # The suites choose every setting with flags; a COHOST_* from the caller's shell
            # (an API key, a model) would silently change what is being tested.
            if not k.startswith("COHOST_")
        }
        child_env.setdefault("RUST_LOG", "info")
        child_env["COHOST_MODEL_DIR"] = MODEL_DIR
        child_env.update(env or {})
        self.flags = ["serve", "--host", "127.0.0.1", "--port", "0", *flags]
        self.process = subprocess.Popen(
            [str(BINARY), *self.flags],
            stdout=subprocess.DEVNULL,
            stderr=self.log_file,
            env=child_env,
            preexec_fn=_die_with_parent,
        )
        try:
            self.url = "http://" + self._wait_for_addr()
            self._wait_ready()
        except BaseException:
            self.stop()
            raise

    def log(self) -> str:
        return pathlib.Path(self.log_file.name).read_text(errors="replace")

    def _wait_for_addr(self) -> str:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            for line in self.log().splitlines():
                at = line.find("addr=")
                if at >= 0:
                    return line[at + 5 :].split()[0]
            if self.process.poll() is not None:
                raise RuntimeError(f"cohost exited early:\n{self.log()}")
            time.sleep(0.05)
        raise RuntimeError(f"no listening address in the log:\n{self.log()}")

    def _wait_ready(self):
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(self.url + "/ready", timeout=5) as reply:
                    if reply.status == 200:
                        return
            except urllib.error.HTTPError as e:
                if e.code != 503:
                    raise RuntimeError(f"/ready answered {e.code}") from e
            except OSError:
                pass
            if self.process.poll() is not None:
                raise RuntimeError(f"cohost exited while loading:\n{self.log()}")
            time.sleep(0.1)
        raise RuntimeError(f"not ready within {READY_TIMEOUT_S} s:\n{self.log()}")

    def alive(self) -> bool:
        return self.process.poll() is None

    def stop(self):
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log_file.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


def wait_until(predicate, timeout_s: float, what: str):
    """Polls `predicate` until it is true; raises naming `what` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}")


__all__ = ["Server", "DEFAULT_MODEL_NAME", "EMBED_MODEL_NAME", "REPO", "SHARED_MODELS", "wait_until"]


def shared_model_flags():
    """`--model` flags of the shared server: chat and embedding models in one process."""
    flags = []
    for path in SHARED_MODELS:
        if not path.exists():
            raise RuntimeError(f"{path} is missing: run models/fetch-default.sh and models/fetch-minilm.sh")
        flags += ["--model", str(path)]
    return flags


def shared_server_url():
    """The open server a suite shares, as a generator for a session fixture: the one
    tests/sdk/run.sh started (COHOST_SDK_URL), or one started here for the session."""
    url = os.environ.get("COHOST_SDK_URL")
    if url:
        yield url
        return
    with Server(*shared_model_flags()) as server:
        yield server.url
