"""Ring P2P through host copies (what gloo groups of CUDA tensors use), on 2 spawned gloo ranks.

The host path is the same code for CPU tensors (the copies are then plain copies), so CPU ranks
check its pairing of sends and receives, the copy back and the byte count."""

from __future__ import annotations

import datetime
import json
import os

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from sp_planner.executor.comm import P2P, CommCounter, RingComm
from sp_planner.executor.spawn import free_port


def _rank(rank: int, world: int, port: int, out_dir: str) -> None:
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=world, timeout=datetime.timedelta(seconds=60))
    try:
        counter = CommCounter()
        comm = RingComm(dist.group.WORLD, counter)
        send = [torch.full((3, 5), float(rank)), torch.arange(4, dtype=torch.float32) + 10 * rank]
        recv = [torch.empty(3, 5), torch.empty(4)]
        comm.wait(comm.send_recv(send, recv, tag=0, via_host=True))
        payload = {"recv": [t.tolist() for t in recv], "bytes": counter.sent_bytes[P2P], "staging": comm.host_staging}
        with open(os.path.join(out_dir, f"rank{rank}.json"), "w") as f:
            json.dump(payload, f)
    finally:
        dist.destroy_process_group()


def test_host_staged_ring_step(tmp_path):
    world = 3
    mp.start_processes(_rank, args=(world, free_port(), str(tmp_path)), nprocs=world, start_method="spawn")
    for rank in range(world):
        got = json.loads((tmp_path / f"rank{rank}.json").read_text())
        prev = (rank - 1) % world
        assert got["recv"][0] == [[float(prev)] * 5] * 3
        assert got["recv"][1] == [float(i + 10 * prev) for i in range(4)]
        assert got["bytes"] == (15 + 4) * 4
        assert got["staging"] is True  # a gloo group
