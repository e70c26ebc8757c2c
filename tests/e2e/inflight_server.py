"""Runs `inflight serve` on a free port for an end-to-end test script, and stops it with SIGTERM."""
import re
import signal
import subprocess
import sys


class InflightServer:
    def __init__(self, inflight, *extra_args):
        self.process = subprocess.Popen([inflight, "serve", "--port", "0", *extra_args], stderr=subprocess.PIPE, text=True)
        for line in self.process.stderr:
            sys.stderr.write(line)
            match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)  # the server names the port it bound
            if match:
                self.port = int(match.group(1))
                return
        raise RuntimeError("the server exited before listening")

    def stop(self):
        """SIGTERM; the server must exit with code 0."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        assert code == 0, f"inflight serve exited with {code}"
