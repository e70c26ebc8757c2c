"""End to end for the chat page: runs the page's own JavaScript under Node against `inflight serve`.

Usage: chat_page_test.py PATH_TO_INFLIGHT

Starts the server, runs chat_page_test.js (which fetches GET /, runs its script with a stand-in DOM and
asks, streams, and stops an answer), then SIGTERM and exit code 0. Node's WebSocket: the global one where
the Node version has it (behind --experimental-websocket in Node 20), else Debian's node-ws package.
"""
import os
import subprocess
import sys

from inflight_server import InflightServer


def node_command():
    probe = subprocess.run(["node", "--experimental-websocket", "-e", "process.exit(typeof WebSocket === 'function' ? 0 : 1)"],
                           capture_output=True)
    if probe.returncode == 0:
        return ["node", "--experimental-websocket", "--no-warnings"]
    return ["node"]  # Node 22+ (no flag needed) or an older one with node-ws


def main():
    server = InflightServer(sys.argv[1])
    script = os.path.join(os.path.dirname(os.path.abspath(__file__)), "chat_page_test.js")
    env = dict(os.environ, NODE_PATH="/usr/share/nodejs:/usr/lib/nodejs")  # where Debian puts node-ws
    try:
        result = subprocess.run([*node_command(), script, str(server.port)], env=env, timeout=240)
    finally:
        server.stop()
    sys.exit(result.returncode)


if __name__ == "__main__":
    main()
