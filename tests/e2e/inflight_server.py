"""Runs `inflight serve` on a free port for an end-to-end test script, and stops it with SIGTERM. Its stderr
is read by a thread into `lines` (and echoed), so the pipe never fills however much the server logs (one
line per request by default) and a test can read the log."""
import re
import signal
import subprocess
import sys
import threading


class InflightServer:
    def __init__(self, inflight, *extra_args):
        self.process = subprocess.Popen([inflight, "serve", "--port", "0", *extra_args], stderr=subprocess.PIPE, text=True)
        self.lines = []
        self.port = None
        listening = threading.Event()

        def read():
            for line in self.process.stderr:
                sys.stderr.write(line)
                self.lines.append(line)
                match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)  # the server names the port it bound
                if match and self.port is None:
                    self.port = int(match.group(1))
                    listening.set()
            listening.set()  # exited before listening: wake the constructor

        self._reader = threading.Thread(target=read, daemon=True)
        self._reader.start()
        listening.wait(120)
        if self.port is None:
            self.process.kill()
            self.process.wait()
            raise RuntimeError("the server exited (or hung) before listening")

    def stop(self):
        """SIGTERM; the server must exit with code 0. Its whole log is in `lines` afterwards."""
        self.process.send_signal(signal.SIGTERM)
        code = self.process.wait(timeout=60)
        self._reader.join(timeout=10)
        assert code == 0, f"inflight serve exited with {code}"
