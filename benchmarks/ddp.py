"""Section `ddp`: DDP fixed overheads on CPU (gloo)."""

from __future__ import annotations

import statistics
import time
from pathlib import Path

import torch


def _ddp_primitives(rank: int, world_size: int, port: int, folder: str, out: str) -> None:
    """One rank of the DDP overhead measurement: what fewstep's sampling run does across processes."""
    import json

    import torch.distributed as dist

    from fewstep.app.shards import ShardStore

    torch.set_num_threads(1)
    start = time.perf_counter()
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world_size)
    times = {"process group start-up": time.perf_counter() - start}
    grid = 61
    record = {"grid": [0.0] * grid, "cost": [[0.5] * grid for _ in range(grid)], "indices": list(range(6))}

    def median_of(fn, repeats=7):
        seconds = []
        for _ in range(repeats):
            dist.barrier()
            t0 = time.perf_counter()
            fn()
            seconds.append(time.perf_counter() - t0)
        return statistics.median(seconds)

    times["broadcast of a GITS search record (61 x 61 cost)"] = median_of(
        lambda: dist.broadcast_object_list([record if rank == 0 else None], src=0)
    )
    for name, dim in (("LeNet", 128), ("Inception", 2048)):
        sums = torch.zeros(dim + dim * dim + 1, dtype=torch.float64)
        label = f"all-reduce of the {name} feature sums ({dim} + {dim}^2 float64)"
        times[label] = median_of(lambda sums=sums: dist.all_reduce(sums))
    store = ShardStore(Path(folder) / f"rank{rank}", (1, 28, 28))
    samples = (torch.rand(64, 1, 28, 28) * 255).to(torch.uint8)
    counter = iter(range(10**6))

    def write():
        first = next(counter) * 64
        store.write(torch.arange(first, first + 64), samples, 0.1)

    times["shard write (64 samples, atomic, checksummed)"] = median_of(write)
    t0 = time.perf_counter()
    dist.destroy_process_group()
    times["process group shut-down"] = time.perf_counter() - t0
    if rank == 0:
        Path(out).write_text(json.dumps(times))


def ddp_overheads(num_samples: int = 64) -> None:
    """DDP's fixed costs on CPU (gloo): the same sampling run in one and in two processes, and the primitives a run
    uses across processes, timed in a two-process group. No speed-up can be measured here (two processes compute
    like one), so these are costs per run, not a scaling figure."""
    import json
    import socket
    import subprocess
    import sys
    import tempfile

    import torch.multiprocessing as mp

    root = Path(__file__).resolve().parents[1]
    print(f"\n## DDP fixed overheads (CPU, gloo; `python run.py num_samples={num_samples}` with and without "
          "`trainer=ddp trainer.devices=2`)\n")  # fmt: skip
    print("| run | wall s |")
    print("|---|---|")
    for label, extra in (("1 process", []), ("2 processes (trainer=ddp trainer.devices=2)",
                                              ["trainer=ddp", "trainer.devices=2"])):  # fmt: skip
        with tempfile.TemporaryDirectory() as tmp:
            command = [
                sys.executable,
                str(root / "run.py"),
                f"num_samples={num_samples}",
                *extra,
                "trainer.enable_progress_bar=false",
                f"hydra.run.dir={tmp}/run",
                f"paths.cache_dir={tmp}/cache",
            ]
            start = time.perf_counter()
            subprocess.run(command, cwd=root, check=True, capture_output=True)
            print(f"| {label} | {time.perf_counter() - start:.1f} |", flush=True)
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "times.json"
        mp.spawn(_ddp_primitives, args=(2, port, tmp, str(out)), nprocs=2)
        times = json.loads(out.read_text())
    print("\n| step, in a two-process gloo group (rank 0) | ms |")
    print("|---|---|")
    for name, seconds in times.items():
        print(f"| {name} | {seconds * 1e3:.1f} |")
