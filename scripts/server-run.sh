# shellcheck shell=bash
# Helpers for the side-by-side scripts (sourced, not run): one server under test at a time, its
# PID in SERVER_PID, stopped when the script exits however it exits.

free_port() {
    python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

SERVER_PID=
stop_server() {
    if [[ -n $SERVER_PID ]]; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=
    fi
}
trap stop_server EXIT

# Peak resident memory so far of the running server (VmHWM), in MB.
peak_rss_mb() {
    awk '/^VmHWM:/ { printf "%.0f\n", $2 / 1024 }' "/proc/$SERVER_PID/status"
}
