"""`inflight serve` takes its options from a config file, and the command line overrides the file.

Usage: serve_config_file_test.py INFLIGHT WORK_DIR (Python standard library only: no virtualenv needed).

Writes a config file that sets the port (0: a free one), the model name, an API key and max-n, starts the
server with it and checks over HTTP that each value is in effect; then starts it again with the same file
plus --model-name and --api-key on the command line, and checks that those win (an --api-key list replaces
the file's). The exit code is the verdict.
"""
import json
import os
import re
import signal
import subprocess
import sys
import urllib.error
import urllib.request


def start(inflight, *args):
    """Starts `inflight serve ARGS` and returns (process, port) once it listens."""
    process = subprocess.Popen([inflight, "serve", *args], stderr=subprocess.PIPE, text=True)
    for line in process.stderr:
        sys.stderr.write(line)
        match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)  # the server names the port it bound
        if match:
            return process, int(match.group(1))
    raise RuntimeError(f"the server exited with {process.wait()} before listening")


def stop(process):
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=30)
    assert code == 0, f"inflight serve exited with {code}"


def request(port, path, key=None, body=None):
    """Returns (status, parsed JSON body)."""
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {key}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(f"http://127.0.0.1:{port}{path}", data=data, headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def main():
    inflight, work_dir = sys.argv[1], sys.argv[2]
    config = os.path.join(work_dir, "serve_config_file_test.ini")
    with open(config, "w") as file:
        file.write('[global]\nport=0\nmodel-name="from-file"\napi-key=["file-key"]\nmax-n=2\nkv-cache-mb=64\n')

    # The file alone: every value it sets is in effect (a server on port 8000 would mean port=0 was ignored).
    process, port = start(inflight, f"--config-file={config}")
    try:
        assert port != 8000, "port=0 in the file was not used"
        status, _ = request(port, "/v1/models")
        assert status == 401, f"api-key from the file not required: {status}"
        status, body = request(port, "/v1/models", key="file-key")
        assert status == 200, f"/v1/models with the file's key: {status} {body}"
        assert [m["id"] for m in body["data"]] == ["from-file"], body
        # max-n=2 from the file: n=3 is refused before anything is generated.
        status, body = request(port, "/v1/completions", key="file-key", body={"prompt": "Hi", "n": 3, "max_tokens": 1})
        assert status == 400 and body["error"]["param"] == "n", f"max-n from the file not used: {status} {body}"
    finally:
        stop(process)

    # The command line beats the file: its model name, and its key list instead of the file's.
    process, port = start(inflight, "--config", config, "--model-name", "from-cli", "--api-key", "cli-key")
    try:
        status, body = request(port, "/v1/models", key="cli-key")
        assert status == 200, f"/v1/models with the command line's key: {status} {body}"
        assert [m["id"] for m in body["data"]] == ["from-cli"], body
        status, _ = request(port, "/v1/models", key="file-key")
        assert status == 401, f"the file's key still accepted beside --api-key: {status}"
    finally:
        stop(process)
    print("serve config file: ok")


if __name__ == "__main__":
    main()
