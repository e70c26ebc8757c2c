"""`inflight serve` out of file descriptors: with its open-file limit at 64, 100 idle connections exhaust
it (accept fails with EMFILE). The listener must survive that: once the idle connections close, the server
answers again. (Its accept loop used to end on any accept error, which left it deaf for good.)

usage: out_of_files_test.py INFLIGHT"""
import http.client
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time

INFLIGHT = os.path.abspath(sys.argv[1])


def main():
    # The hard limit too, or serve would raise its soft limit to it.
    server = subprocess.Popen(["prlimit", "--nofile=64:64", INFLIGHT, "serve", "--port", "0", "--threads", "1"],
                              stderr=subprocess.PIPE, text=True)
    log = []
    try:
        port = None
        for line in server.stderr:
            log.append(line)
            match = re.search(r"on http://127\.0\.0\.1:(\d+)", line)
            if match:
                port = int(match.group(1))
                break
        assert port, "the server did not start:\n" + "".join(log)
        threading.Thread(target=lambda: log.extend(server.stderr), daemon=True).start()
        idle = []
        for _ in range(100):
            s = socket.create_connection(("127.0.0.1", port), timeout=10)  # the kernel's backlog takes them
            idle.append(s)
        time.sleep(1.0)  # the server accepts until EMFILE, then keeps failing to accept
        assert server.poll() is None, "the server died"
        for s in idle:
            s.close()
        deadline = time.time() + 30
        status = None
        while time.time() < deadline and status != 200:
            try:
                connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                connection.request("GET", "/health")
                status = connection.getresponse().status
            except OSError:
                time.sleep(0.2)
        assert status == 200, f"no answer after the idle connections closed (status {status})"
        said = "".join(log)
        assert "cannot accept connections" in said, "the server did not say why it could not accept:\n" + said
        print("the server survived EMFILE and answers again; it said: "
              + next(l.strip() for l in log if "cannot accept" in l))
    finally:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


if __name__ == "__main__":
    main()
