"""train_gcln under DistributedDataParallel: two CPU processes on gloo vs one process."""

from __future__ import annotations

import json
import os
import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gcln_fast.gcln import train_gcln

from helpers import ATTACKS, MIX, toy_data, trained_classifier

N, BATCH = 128, 32


def _setup(seed=0):
    x, y = toy_data(N, seed=seed)
    return x, y, trained_classifier(x, y, seed=seed)


def _kwargs(out_dir):
    return dict(
        out_dir=out_dir,
        epochs=1,
        detector_epochs=1,
        batch_size=BATCH,
        lr=1e-3,
        attack_mix=MIX,
        attack_fns=ATTACKS,
        generator_kwargs={"width": 8, "blocks": 1},
        detector_kwargs={"width": 8},
        perceptual="classifier",
        guard_size=0,
        progress=False,
        seed=0,
        device="cpu",
    )


def _worker(rank, world, port, out_dir):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=world)
    try:
        x, y, C = _setup()
        res = train_gcln(C, (x, y), **_kwargs(out_dir))
        # every rank ends with the same G (DDP keeps the replicas in sync)
        flat = torch.cat([p.detach().flatten() for p in res["generator"].parameters()])
        gathered = [torch.zeros_like(flat) for _ in range(world)]
        dist.all_gather(gathered, flat)
        if rank == 0:
            in_sync = all(torch.allclose(gathered[0], g) for g in gathered[1:])
            max_diff = max(float((gathered[0] - g).abs().max()) for g in gathered[1:])
            with open(os.path.join(out_dir, "ddp_result.json"), "w") as f:
                json.dump({"steps": res["steps"], "ranks_in_sync": in_sync, "max_param_diff": max_diff}, f)
    finally:
        dist.destroy_process_group()


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed not built")
def test_ddp_two_gloo_processes_match_single_process(tmp_path):
    single_dir, ddp_dir = tmp_path / "single", tmp_path / "ddp"
    x, y, C = _setup()
    single = train_gcln(C, (x, y), **_kwargs(single_dir))
    mp.spawn(_worker, args=(2, _free_port(), str(ddp_dir)), nprocs=2, join=True)

    ddp = json.loads((ddp_dir / "ddp_result.json").read_text())
    assert ddp["ranks_in_sync"], f"replicas differ by up to {ddp['max_param_diff']}"
    assert ddp["steps"] == single["steps"] == N // BATCH
    h_single = json.loads((single_dir / "history.json").read_text())
    h_ddp = json.loads((ddp_dir / "history.json").read_text())
    assert len(h_ddp["steps"]) == len(h_single["steps"])  # rank 0 logged every step, once
    assert h_ddp["config"]["train"]["world_size"] == 2
    assert (ddp_dir / "gcln.pt").is_file()
    for key in ("loss_g", "loss_d"):
        a, b = h_single["epochs"][-1][key], h_ddp["epochs"][-1][key]
        assert abs(a - b) <= 0.25 * abs(a) + 0.02, (key, a, b)
