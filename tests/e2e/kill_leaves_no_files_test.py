"""`inflight serve` killed (SIGKILL) while it loads the model and while it streams: nothing on disk may be
left half-written. The server writes no file of its own, so the check is that the working directory and the
model directory are exactly as before (names, sizes, modification times). Files the tools do write go
through tools/atomic_file.cpp and tools/atomic_write.py (tested in test_atomic_file).

usage: kill_leaves_no_files_test.py INFLIGHT"""
import http.client
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time

INFLIGHT = os.path.abspath(sys.argv[1])
MODEL_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "models")


def snapshot(*folders):
    state = {}
    for folder in folders:
        for root, _, files in os.walk(folder):
            for name in files:
                path = os.path.join(root, name)
                info = os.stat(path)
                state[path] = (info.st_size, info.st_mtime_ns)
    return state


def start(cwd):
    return subprocess.Popen([INFLIGHT, "serve", "--port", "0", "--threads", "1"], cwd=cwd, stderr=subprocess.PIPE, text=True)


def main():
    with tempfile.TemporaryDirectory() as cwd:
        before = snapshot(cwd, MODEL_DIR)
        # During the load: killed at several moments, at least one of them before it listens.
        killed_while_loading = 0
        for delay in (0.0, 0.05, 0.2):
            server = start(cwd)
            time.sleep(delay)
            server.send_signal(signal.SIGKILL)
            out = server.communicate(timeout=30)[1]
            killed_while_loading += "on http://" not in out
            assert snapshot(cwd, MODEL_DIR) == before, "a file changed after a kill during the load"
        assert killed_while_loading > 0, "every kill came after the load: no kill during a load was tested"

        # While streaming.
        server = start(cwd)
        try:
            port = None
            for line in server.stderr:
                match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
                if match:
                    port = int(match.group(1))
                    break
            assert port, "the server did not start"
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
            connection.request("POST", "/v1/completions", json.dumps(
                {"prompt": "Once upon a time", "max_tokens": 400, "ignore_eos": True, "stream": True}),
                {"Content-Type": "application/json"})
            response = connection.getresponse()
            assert response.status == 200
            for _ in range(5):
                assert response.readline().startswith(b"data: ")
                response.readline()
            server.send_signal(signal.SIGKILL)
            server.wait(timeout=30)
        finally:
            if server.poll() is None:
                server.kill()
                server.wait()
        assert snapshot(cwd, MODEL_DIR) == before, "a file changed after a kill while streaming"
        print(f"nothing written: {killed_while_loading} kill(s) during the load, 1 while streaming")


if __name__ == "__main__":
    main()
