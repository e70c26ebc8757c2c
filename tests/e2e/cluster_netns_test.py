"""The "separate machines" test: two engine nodes in network namespaces of their own, reached by the gateway
over veth pairs, so nothing relies on loopback.

Usage: cluster_netns_test.py PATH_TO_INFLIGHT

The test makes its own hosts: namespaces inflt<pid>a and inflt<pid>b, each joined to this namespace by a
veth pair on a /24 of 10.x that no route here uses yet; it removes them at the end, also on failure. Where
namespaces cannot be made (not root, no CAP_SYS_ADMIN, no iproute2) it prints SKIPPED and why.

- completions (streamed and not) go through the gateway to both nodes, with a cluster secret;
- SIGKILL of one node mid-stream: its stream ends with an error event, the other node's completes;
- a pulled cable (the veth taken down: no FIN, no RST, the half-open link says nothing) is noticed by the
  heartbeat's link timeout; with the cable back, the node is up again and serves.
"""
import os
import subprocess
import sys
import time

from cluster import Cluster, Node, all_up, completed, failed, start_streams, traffic_returns, wait_until

SECRET = "netns-test-secret"
LONG = {"prompt": "Once upon a time", "max_tokens": 300, "ignore_eos": True, "temperature": 0}


def ip(*args, check=True):
    return subprocess.run(["ip", *args], check=check, capture_output=True, text=True)


def free_subnet():
    routes = ip("-4", "route", "show", "table", "all", check=False).stdout + ip("-4", "addr").stdout
    for second in range(231, 250):
        if f"10.{second}." not in routes:
            return second
    raise RuntimeError("no free 10.x.0.0/16 for the test hosts")


class TestHosts:
    """Two namespaces, each with a veth pair to this one: host i is 10.S.i.2, its peer here 10.S.i.1."""

    def __init__(self):
        tag = os.getpid() % 100000
        self.namespaces = [f"inflt{tag}a", f"inflt{tag}b"]
        self.host_links = [f"ifh{tag}a", f"ifh{tag}b"]
        self.addresses = []

    def make(self):
        second = free_subnet()
        for i, (namespace, host_link) in enumerate(zip(self.namespaces, self.host_links), start=1):
            peer = host_link.replace("ifh", "ifp")
            ip("netns", "add", namespace)
            ip("link", "add", host_link, "type", "veth", "peer", "name", peer)
            ip("link", "set", peer, "netns", namespace)
            ip("addr", "add", f"10.{second}.{i}.1/24", "dev", host_link)
            ip("link", "set", host_link, "up")
            ip("-n", namespace, "addr", "add", f"10.{second}.{i}.2/24", "dev", peer)
            ip("-n", namespace, "link", "set", peer, "up")
            ip("-n", namespace, "link", "set", "lo", "up")
            self.addresses.append(f"10.{second}.{i}.2")

    def remove(self):
        for namespace, host_link in zip(self.namespaces, self.host_links):
            ip("netns", "del", namespace, check=False)  # takes the namespace's veth end, and so the pair
            ip("link", "del", host_link, check=False)


def one_fails_one_completes(records, threads, started_at, what):
    for thread in threads:
        thread.join(timeout=120)
        assert not thread.is_alive(), f"{what}: a request hung"
    broken = [r for r in records if failed(r)]
    assert len(broken) == 1 and broken[0]["done"], [r["events"][-1:] for r in records]
    other = next(r for r in records if r is not broken[0])
    assert completed(other), other["events"][-1:]
    return broken[0]["times"][-1] - started_at


def run(inflight, hosts):
    with Cluster(inflight) as cluster:
        nodes = []
        for namespace, address, label in zip(hosts.namespaces, hosts.addresses, ("host-a", "host-b")):
            node = Node(inflight, "--host", address, "--cluster-secret", SECRET, label=label,
                        prefix=("ip", "netns", "exec", namespace))
            cluster.processes.append(node)
            assert node.host == address, node.host
            nodes.append(node)
        a, b = nodes
        gateway = cluster.gateway("--node", a.address, "--node", b.address, "--cluster-secret", SECRET,
                                  "--heartbeat-ms", "250", "--link-timeout-ms", "1500")
        gateway.wait_nodes(all_up(2), what="both test hosts up")
        for _ in range(2):
            status, _, body = gateway.post("/v1/completions", {"prompt": "The capital of France is", "max_tokens": 4,
                                                               "temperature": 0})
            assert status == 200 and "Paris" in body["choices"][0]["text"], (status, body)
        records, threads = start_streams(gateway.port, LONG, 2)
        wait_until(lambda: all(r["tokens"] >= 3 for r in records), 60, "a stream on each host")
        gateway.wait_nodes(lambda n: all(x["in_flight"] == 1 for x in n.values()), what="one stream on each host")

        # Host A's node dies.
        killed_at = time.monotonic()
        a.kill()
        print(f"netns: SIGKILL to the affected client's error event: "
              f"{one_fails_one_completes(records, threads, killed_at, 'kill') * 1000:.0f} ms")
        a = Node(inflight, "--host", hosts.addresses[0], "--port", str(a.port), "--cluster-secret", SECRET,
                 label="host-a2", prefix=("ip", "netns", "exec", hosts.namespaces[0]))
        cluster.processes.append(a)
        gateway.wait_nodes(all_up(2), timeout=30, what="host A's node back")

        # Host B's cable is pulled: nothing closes the TCP link, only the heartbeat notices.
        records, threads = start_streams(gateway.port, LONG, 2)
        wait_until(lambda: all(r["tokens"] >= 3 for r in records), 60, "a stream on each host")
        pulled_at = time.monotonic()
        ip("link", "set", hosts.host_links[1], "down")
        print(f"netns: cable pulled to the affected client's error event: "
              f"{one_fails_one_completes(records, threads, pulled_at, 'cable') * 1000:.0f} ms (link timeout 1500 ms)")
        gateway.wait_nodes(lambda n: n[b.address]["state"] == "down", what="host B down")
        ip("link", "set", hosts.host_links[1], "up")
        gateway.wait_nodes(lambda n: all_up(2)(n) and n[b.address]["running"] == 0
                           and n[b.address]["kv_blocks_used"] == 0, timeout=30,
                           what="host B back with no orphaned sequence")
        traffic_returns(gateway, b.address, LONG, 2)
        assert gateway.stop() == 0 and a.stop() == 0 and b.stop() == 0


def main():
    inflight = sys.argv[1]
    hosts = TestHosts()
    try:
        if os.geteuid() != 0:
            print("SKIPPED: making network namespaces needs root")
            return
        try:
            hosts.make()
        except (OSError, subprocess.CalledProcessError) as error:
            detail = getattr(error, "stderr", "") or str(error)
            print(f"SKIPPED: cannot make network namespaces here: {detail.strip()}")
            return
        run(inflight, hosts)
        print("cluster across network namespaces: all checks passed")
    finally:
        hosts.remove()


if __name__ == "__main__":
    main()
