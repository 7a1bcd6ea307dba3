"""USP across two hosts through torchrun's c10d rendezvous: two network namespaces joined by a veth
pair (the ring crosses it, the Ulysses all-to-all stays inside each host), and the same job as two
agents on 127.0.0.1."""

from __future__ import annotations

import json
import socket

from .jobs import PER_RANK, free_port, namespace_endpoint, run_nodes, sp_run_argv
from ..netns import HOSTNAMES, processes_mentioning

# Bytes on a veth end beyond the ring's payload: TCP/IP headers (66 B per 1448 B segment without
# segmentation offload: 4.6%, plus ACKs for the other direction) and control traffic (rendezvous,
# gloo connection setup, the world check's and the results' all_gather_object). Measured on this
# machine: 46 KB per direction with a 2 MiB ring payload (2.2%). Allowed: 10% + 256 KiB.
HEADER_FRACTION = 0.10
CONTROL_BOUND_BYTES = 256 * 1024


def _check_result(path, hosts: tuple[str, str]) -> None:
    result = json.loads(path.read_text())
    assert result["passed"] is True, result["failures"]
    predicted = PER_RANK.model_dump()  # all_to_all, p2p, and no all-gather CP traffic
    assert result["comm_bytes_predicted"] == predicted
    assert [r["comm_bytes_measured"] for r in result["ranks"]] == [predicted] * 4
    # Ranks 0, 1 on the first host, 2, 3 on the second; Ulysses groups inside a host, rings across.
    assert [(r["rank"], r["host"]) for r in result["ranks"]] == [
        (0, hosts[0]), (1, hosts[0]), (2, hosts[1]), (3, hosts[1])]
    assert [r["groups"] for r in result["ranks"]] == [
        {"ulysses": [0, 1], "ring": [0, 2]}, {"ulysses": [0, 1], "ring": [1, 3]},
        {"ulysses": [2, 3], "ring": [0, 2]}, {"ulysses": [2, 3], "ring": [1, 3]}]


def test_usp_across_two_namespaces(two_hosts, tmp_path):
    endpoint = namespace_endpoint()
    before = [two_hosts.veth_tx_bytes(n) for n in (0, 1)], [two_hosts.lo_tx_bytes(n) for n in (0, 1)]
    runs = run_nodes(two_hosts, {n: sp_run_argv(n, endpoint, join_timeout_s=30, timeout_s=90,
                                                extra=["--out", str(tmp_path / f"node{n}.json")])
                                 for n in (0, 1)}, tmp_path, deadline_s=150)
    after = [two_hosts.veth_tx_bytes(n) for n in (0, 1)], [two_hosts.lo_tx_bytes(n) for n in (0, 1)]
    for node, run in runs.items():
        assert run.returncode == 0, run.stderr[-3000:]
        assert "sp-run PASSED" in run.stdout
        _check_result(tmp_path / f"node{node}.json", HOSTNAMES)
    assert two_hosts.pids() == [] and processes_mentioning(str(tmp_path)) == []

    ring_bytes = 2 * PER_RANK.p2p  # each node's two ranks send their ring blocks to the other node
    ulysses_bytes = 2 * PER_RANK.all_to_all  # each node's two ranks exchange with each other
    for node in (0, 1):
        crossed = after[0][node] - before[0][node]
        looped = after[1][node] - before[1][node]
        assert crossed >= ring_bytes, f"node {node}: {crossed} bytes crossed the veth, the ring sends {ring_bytes}"
        # Had the all-to-all crossed too, it would add ulysses_bytes (2.6 MB) to the 2.1 MB ring.
        assert crossed <= ring_bytes * (1 + HEADER_FRACTION) + CONTROL_BOUND_BYTES < ring_bytes + ulysses_bytes, (
            f"node {node}: {crossed} bytes crossed the veth, more than ring {ring_bytes} + overhead")
        # Peers inside one namespace reach each other's veth address through the local route (lo).
        assert looped >= ulysses_bytes, f"node {node}: only {looped} bytes on lo, all-to-all sends {ulysses_bytes}"


def test_usp_as_two_agents_on_loopback(loopback, tmp_path):
    endpoint = f"127.0.0.1:{free_port()}"
    runs = run_nodes(loopback, {n: sp_run_argv(n, endpoint, join_timeout_s=30, timeout_s=90,
                                               extra=["--out", str(tmp_path / f"node{n}.json")])
                                for n in (0, 1)}, tmp_path, deadline_s=150)
    for node, run in runs.items():
        assert run.returncode == 0, run.stderr[-3000:]
        _check_result(tmp_path / f"node{node}.json", (socket.gethostname(), socket.gethostname()))
    assert processes_mentioning(str(tmp_path)) == []
