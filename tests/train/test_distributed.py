"""Data-parallel facts: the launcher's environment, blocks, refusals, and two gloo ranks
training as one process would."""

from __future__ import annotations

import os
import socket
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from distillscope.distill import build_loss
from distillscope.errors import ConfigError
from distillscope.train import TeacherCache, Trainer
from distillscope.train.distributed import (
    SINGLE,
    World,
    batch_rows,
    block,
    check_data_parallel,
    current_world,
    gather_rng_state,
    process_group,
    rank_rng_state,
    world_from_env,
)
from distillscope.train.seeding import epoch_generator, get_rng_state
from tests.train.tiny_train_parts import KD, ScaledCE, TinyNet, config, make_data

TORCHRUN = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "h"}
SRUN = {"SLURM_STEP_ID": "0", "SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1"}


def test_torchrun_and_srun_variables_name_the_rank() -> None:
    assert world_from_env(TORCHRUN) == World(rank=1, size=4, local_rank=1)
    assert world_from_env(SRUN) == World(rank=5, size=8, local_rank=1)
    assert world_from_env({**SRUN, **TORCHRUN}) == World(1, 4, 1)  # torchrun inside a job
    assert world_from_env({}) == SINGLE
    # a batch script's own shell (no srun step) is one process, whatever --ntasks says
    batch_shell = {k: v for k, v in SRUN.items() if k != "SLURM_STEP_ID"}
    assert world_from_env(batch_shell) == SINGLE
    assert world_from_env({"WORLD_SIZE": "1", "RANK": "0", "LOCAL_RANK": "0"}) == SINGLE


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK='x'"),
        ({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"}, "RANK=2 is outside"),
        ({**SRUN, "SLURM_PROCID": "8"}, "SLURM_PROCID=8 is outside"),
    ],
)
def test_bad_launcher_variables_are_refused_in_one_line(env, named) -> None:
    with pytest.raises(ConfigError, match=named) as info:
        world_from_env(env)
    assert "\n" not in str(info.value)


def test_a_world_without_master_address_is_refused(monkeypatch) -> None:
    monkeypatch.delenv("MASTER_ADDR", raising=False)
    monkeypatch.delenv("MASTER_PORT", raising=False)
    refused = pytest.raises(ConfigError, match="MASTER_ADDR and MASTER_PORT not set")
    with refused, process_group(World(0, 2), torch.device("cpu")):
        pass
    assert not dist.is_initialized()
    with process_group(SINGLE, torch.device("cpu")) as world:
        assert world == SINGLE and current_world() == SINGLE


def test_blocks_and_evaluation_rows_partition_the_items() -> None:
    for n in range(0, 23):
        for size in range(1, 5):
            spans = [block(n, World(r, size)) for r in range(size)]
            assert [i for lo, hi in spans for i in range(lo, hi)] == list(range(n))
            assert max(hi - lo for lo, hi in spans) - min(hi - lo for lo, hi in spans) <= 1
            for limit in (None, 2):
                dealt = [batch_rows(n, 4, limit, World(r, size)) for r in range(size)]
                rows = sorted(torch.cat(dealt).tolist())
                assert rows == list(range(min(n, 4 * limit) if limit else n))


def test_what_cannot_train_data_parallel_is_refused_in_one_line() -> None:
    two = World(0, 2)
    check_data_parallel(two, {"kd": build_loss({"kd": {}})}, 64, 100)
    check_data_parallel(SINGLE, {"crd": build_loss({"crd": {}})}, 63, 1)  # one process: all
    cases = [
        ({"s": build_loss({"ce": {}})}, 63, 100, "divisible by 2; use e.g. 64"),
        ({"s": build_loss({"ce": {}})}, 64, 1, "1 items, fewer than the 2 processes"),
        ({"s": build_loss({"ce": {}, "crd": {}})}, 64, 100, "loss term 'crd' keeps memory banks"),
        ({"s": build_loss({"sp": {}})}, 64, 100, "loss term 'sp' relates the items"),
        ({"s": build_loss({"reviewkd": {}})}, 64, 100, "'reviewkd' counts the items"),
    ]
    for losses, batch_size, n, phrase in cases:
        with pytest.raises(ConfigError, match=phrase) as info:
            check_data_parallel(two, losses, batch_size, n)
        assert "\n" not in str(info.value)
    check_data_parallel(two, {"s": build_loss({"reviewkd": {"warmup_epochs": 0}})}, 64, 100)


def test_one_process_checkpoints_its_own_generators_and_reads_them_back() -> None:
    tensors, meta = gather_rng_state(SINGLE)
    now, now_meta = get_rng_state()
    assert tensors.keys() == now.keys() and meta == now_meta
    saved = {**tensors, "rank1/torch": torch.zeros(3, dtype=torch.uint8)}
    mine, _ = rank_rng_state(saved, {**meta, "rank1": {"python": 7}}, 0)
    assert mine.keys() == tensors.keys()
    theirs, their_meta = rank_rng_state(saved, {**meta, "rank1": {"python": 7}}, 1)
    assert list(theirs) == ["torch"] and their_meta == {"python": 7}


def test_one_process_trains_bit_for_bit_as_a_bare_pytorch_loop() -> None:
    """Without a process group nothing of the data-parallel path runs: the weights equal an
    independent loop's exactly (its order from epoch_generator, SGD, a short last batch)."""
    data, cfg = make_data(45), config(epochs=2, batch_size=8, momentum=0.9)
    model = TinyNet(dropout=0.0)
    Trainer(model, build_loss({"ce": {}}), cfg, progress=False, seed=7).fit(data)
    bare = TinyNet(dropout=0.0)
    sgd = torch.optim.SGD(bare.parameters(), lr=cfg.lr, momentum=0.9, weight_decay=0.0)
    for epoch in range(2):
        order = torch.randperm(45, generator=epoch_generator(7, epoch))
        for start in range(0, 45, 8):
            idx = order[start : start + 8]
            loss = F.cross_entropy(bare(data.inputs[idx]), data.targets[idx])
            sgd.zero_grad(set_to_none=True)
            loss.backward()
            sgd.step()
    assert all(torch.equal(a, b) for a, b in zip(model.parameters(), bare.parameters()))


# ------------------------------------------------------------- two gloo ranks


def train_both(disk: Path | None = None) -> dict:
    """A student with a loss parameter on 45 items (batches of 8, a short last batch of 5:
    shares of 3 and 2), a KD student from a teacher cache and a DML group of two, in the
    current world."""
    data = make_data(45)
    cfg = config(epochs=2, batch_size=8, optimizer="adam", lr=0.01)
    student, loss = TinyNet(dropout=0.0), ScaledCE()
    history = Trainer(student, loss, cfg, progress=False, seed=1).fit(data, val=data)
    teacher = TinyNet(hidden=32, dropout=0.0, seed=5)
    world = current_world()
    cache = TeacherCache.build(teacher, data, 8, "cpu", progress=False, world=world)
    if disk is not None:  # every rank writes its block into the same files
        TeacherCache.on_disk(teacher, data, disk, 8, "cpu", progress=False, world=world)
    kd = TinyNet(dropout=0.0, seed=2)
    Trainer(kd, KD(), cfg, teacher_cache=cache, progress=False, seed=1).fit(data)
    peers = {"a": TinyNet(dropout=0.0, seed=3), "b": TinyNet(dropout=0.0, seed=4)}
    dml = {p: build_loss({"dml": {}}) for p in peers}
    Trainer(peers, dml, cfg, progress=False, seed=1, name="group").fit(data)
    return {"student": student.state_dict(), "scale": loss.log_scale.detach().clone(),
            "history": history, "cache": cache.logits, "kd": kd.state_dict(),
            "a": peers["a"].state_dict(), "b": peers["b"].state_dict()}  # fmt: skip


def rank_main(rank: int, size: int, port: int, folder: str) -> None:
    """One spawned rank: join a gloo group, train, rank 0 saves what it trained."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    dist.init_process_group("gloo", rank=rank, world_size=size)
    try:
        trained = train_both(Path(folder) / "disk")
        if rank == 0:
            torch.save(trained, Path(folder) / "ranks.pt")
        dist.barrier()  # no rank tears the group down while another still works (as runs do)
    finally:
        dist.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.integration
def test_two_gloo_ranks_train_as_one_process_with_a_short_last_batch(tmp_path: Path) -> None:
    mp.spawn(rank_main, args=(2, free_port(), str(tmp_path)), nprocs=2)
    ranks = torch.load(tmp_path / "ranks.pt", weights_only=False)
    alone = train_both()
    assert torch.equal(ranks["cache"], alone["cache"])  # blocks gathered into the whole cache
    disk = TeacherCache.on_disk(TinyNet(), make_data(45), tmp_path / "disk", 8, "cpu")
    assert torch.equal(disk.logits, alone["cache"])  # both ranks' blocks in the files, published
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    for name in ("student", "kd", "a", "b"):  # b: a DML group's peers, each through DDP
        for key, value in alone[name].items():
            assert torch.allclose(ranks[name][key], value, atol=1e-6), (name, key)
    assert torch.allclose(ranks["scale"], alone["scale"], atol=1e-6)  # averaged by all-reduce
    assert ranks["scale"].item() != 0.0  # the loss parameter did train
    for two, one in zip(ranks["history"], alone["history"]):
        assert two["train_acc"] == one["train_acc"] and two["val_acc"] == one["val_acc"]
        assert two["loss"] == pytest.approx(one["loss"], abs=1e-6)
        assert two["val_loss"] == pytest.approx(one["val_loss"], abs=1e-6)
