"""Training under torchrun computes what one process computes: the same global batch, the same weights.

`--batch-size B` is the items of one optimiser step over all processes and micro-batches: step s takes the
items order[k*B:(k+1)*B] of a seeded permutation, rank r of W takes every W-th of them ([r::W]) and splits its
B/W items into `--grad-accum` micro-batches. Each micro-batch's mean loss is divided by `--grad-accum` and DDP
averages the ranks' gradients, so every configuration's gradient is the mean over the same B items. These tests
train 2 processes (torchrun, gloo) and 1 process with gradient accumulation and compare the weights, and kill a
2-process run with SIGKILL and resume it to the weights of an uninterrupted one.
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from axial_attention.training import TrainConfig, train
from axial_attention.training.data import batch_indices

ROOT = Path(__file__).resolve().parent.parent
# A tiny model on the digits: 3 steps take well under a second; the runs' cost is starting the processes.
MODEL = dict(dim=8, heads=2, depth=1, batch_size=8, samples_per_row=2, progress=False, device="cpu")
# Dropout off: the ranks draw different dropout masks (seed + rank) from one process' single stream, so with
# dropout the two configurations would train on differently masked activations, not just sum differently.
SAME_BATCH = dict(MODEL, steps=3, dropout=0.0, attn_dropout=0.0, checkpoint_every=3)
# Float tolerance of "the same weights". The configurations add the same per-item gradients in other orders: one
# process with accumulation adds the halves' gradients in .grad, two processes each average their 4 items (items
# 0, 2, 4, 6 and 1, 3, 5, 7) and gloo adds the two. The sums differ by float32 rounding (about 1e-7 relative);
# AdamW moves each weight by about lr = 2e-3 a step whatever the gradient's size, so the rounding stays a
# rounding of the step. Measured on a CPU: at most 6e-8 after these 3 steps (1.2e-7, one ulp of |w| in [1, 2),
# after 4). 1e-5 leaves room for other CPUs' kernels, yet is 200x below one step's move; the same run on another
# global batch ends about 8e-3 away (the control below).
ATOL = 1e-5


def _option(name: str, value) -> list[str]:
    flag = "--" + name.replace("_", "-")
    if isinstance(value, bool):
        return [flag if value else "--no-" + flag[2:]]
    return [flag, str(value)]


def command_line(out: Path, **config) -> list[str]:
    return ["train", "--out", str(out), *(word for name, value in config.items() for word in _option(name, value))]


def torchrun(out: Path, procs: int = 2, **config) -> list[str]:
    # --standalone: torchrun's c10d rendezvous on a port the operating system gives it (no port picked here)
    return [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", str(procs),
            "-m", "axial_attention", *command_line(out, **config)]


ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def run_torchrun(out: Path, procs: int = 2, **config) -> None:
    result = subprocess.run(torchrun(out, procs, **config), env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]


def state_of(folder: Path) -> dict:
    return torch.load(folder / "training_state.pt", weights_only=True)


def weights_of(folder: Path) -> dict[str, dict[str, torch.Tensor]]:
    """The raw weights and the EMA in training_state.pt, and model.safetensors (the EMA, what users load)."""
    state = state_of(folder)
    return {"raw": state["model"], "ema": state["ema"]["average"], "model.safetensors": load_file(
        folder / "model.safetensors")}


def largest_difference(a: dict, b: dict) -> float:
    assert a.keys() == b.keys()
    return max((a[name].double() - b[name].double()).abs().max().item() for name in a)


@pytest.fixture
def single_thread_train():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as the torchrun workers (OMP_NUM_THREADS=1): the same CPU kernels
    yield lambda out, **config: train(TrainConfig(out=str(out), **config))
    torch.set_num_threads(threads)


def test_the_ranks_and_micro_batches_of_a_step_hold_the_one_global_batch():
    """What the trainer does with step s's batch, for any processes x accumulation: disjoint parts whose union
    is the batch one process takes; so 2 processes and 1 process with accumulation see the same items."""
    for step in (0, 1, 178, 179, 500):  # 1438 training digits, batch 8: an epoch is 179 steps
        one = batch_indices(step, 1438, 8, seed=0)
        for world in (1, 2, 4):
            shares = [batch_indices(step, 1438, 8, 0, rank, world) for rank in range(world)]
            assert all(len(share) == 8 // world for share in shares)
            assert torch.equal(torch.cat(shares).sort().values, one.sort().values)
            assert torch.equal(torch.stack(shares, 1).flatten(), one)  # rank r takes items r, r + W, ...
        assert len(set(one.tolist())) == 8
    assert not torch.equal(batch_indices(1, 1438, 8, 0).sort().values, batch_indices(0, 1438, 8, 0).sort().values)


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> Path:
    """The reference: 1 process, no accumulation, on the global batch of 8."""
    out = tmp_path_factory.mktemp("one_process")
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(out=str(out), **SAME_BATCH))
    finally:
        torch.set_num_threads(threads)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("procs,grad_accum", [(1, 2), (2, 1), (2, 2)],
                         ids=["1-process-accumulating-2", "2-processes", "2-processes-accumulating-2"])
def test_processes_and_accumulation_train_the_weights_of_one_process(one_process, tmp_path, single_thread_train,
                                                                     procs, grad_accum):
    """(2, 2) has DDP skip the all-reduce (no_sync) on the first micro-batch of each step."""
    if procs == 1:
        single_thread_train(tmp_path, grad_accum=grad_accum, **SAME_BATCH)
    else:
        run_torchrun(tmp_path, procs, grad_accum=grad_accum, **SAME_BATCH)
    state = state_of(tmp_path)
    assert state["step"] == 3 and len(state["rng"]) == procs
    assert json.loads((tmp_path / "results.json").read_text())["world_size"] == procs
    expected, got = weights_of(one_process), weights_of(tmp_path)
    for kind in expected:
        difference = largest_difference(expected[kind], got[kind])
        assert difference <= ATOL, f"{kind}: the weights differ by {difference:.3g}"
    expected_bits = json.loads((one_process / "results.json").read_text())["test_bits_per_dim"]
    assert json.loads((tmp_path / "results.json").read_text())["test_bits_per_dim"] == pytest.approx(
        expected_bits, abs=1e-5)


@pytest.mark.slow
def test_the_tolerance_tells_another_global_batch_apart(one_process, tmp_path, single_thread_train):
    """The control of ATOL: the same run on another global batch (6 items a step) ends far outside it."""
    single_thread_train(tmp_path, **{**SAME_BATCH, "batch_size": 6})
    assert largest_difference(weights_of(one_process)["raw"], weights_of(tmp_path)["raw"]) > 100 * ATOL


# -- a killed 2-process run ------------------------------------------------------------------------------
# Dropout on: resuming must restore each rank's own random state for the masks to be the same.
RESUMABLE = dict(MODEL, steps=30, dropout=0.1, attn_dropout=0.1, checkpoint_every=5, log_every=5, eval_every=15,
                 eval_items=40)


def _children(pid: int) -> list[int]:
    """The processes whose parent is `pid` (torchrun's workers), read from /proc."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:  # ended meanwhile
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                found.append(int(entry))
    return found


def kill_after_first_checkpoint(out: Path, **config) -> None:
    """Start a 2-process run and SIGKILL both workers as soon as its first checkpoint is written: a machine
    lost mid-step, with no chance to save anything (torchrun then fails the job)."""
    log = open(out.parent / f"{out.name}.log", "w")
    launcher = subprocess.Popen(torchrun(out, 2, **config), env=ENV, stdout=log, stderr=subprocess.STDOUT)
    try:
        workers: list[int] = []
        deadline = time.monotonic() + 240
        while not (out / "training_state.pt").exists():
            assert launcher.poll() is None, f"the run ended before its first checkpoint: {launcher.returncode}"
            assert time.monotonic() < deadline, "no checkpoint within 240 s"
            if len(workers) < 2:
                workers = _children(launcher.pid)
            time.sleep(0.002)
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        assert launcher.wait(timeout=120) != 0  # torchrun saw its workers die
    finally:
        if launcher.poll() is None:
            launcher.kill()
            launcher.wait()
        log.close()
    assert len(workers) == 2, workers


def _logged(folder: Path) -> list[dict]:
    records = [json.loads(line) for line in (folder / "metrics.jsonl").read_text().splitlines()]
    return [{k: v for k, v in record.items() if k != "seconds"} for record in records]


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds torchrun's workers in /proc (Linux)")
def test_a_killed_two_process_run_resumes_to_the_weights_of_an_uninterrupted_one(tmp_path):
    run_torchrun(tmp_path / "straight", **RESUMABLE)
    killed = tmp_path / "killed"
    kill_after_first_checkpoint(killed, **RESUMABLE)
    reached = state_of(killed)["step"]
    assert reached in (5, 10, 15, 20, 25), f"killed at step {reached}, not before the end of the run"
    assert json.loads((killed / "results.json").read_text())["status"] == "running"
    run_torchrun(killed, resume=True, **RESUMABLE)

    # Exactly equal, not within a tolerance: the same operations on the same numbers in the same order on
    # each rank (gloo adds two ranks' values, and a + b == b + a in floating point).
    expected, resumed = state_of(tmp_path / "straight"), state_of(killed)
    assert resumed["step"] == expected["step"] == 30
    for kind in ("model", "ema", "optimizer"):
        flat_expected, flat_resumed = _flatten(expected[kind]), _flatten(resumed[kind])
        assert flat_expected.keys() == flat_resumed.keys()
        for name, value in flat_expected.items():
            assert _same(value, flat_resumed[name]), f"{kind}.{name}"
    for rank in range(2):
        assert torch.equal(expected["rng"][rank]["cpu"], resumed["rng"][rank]["cpu"]), rank
    assert not torch.equal(resumed["rng"][0]["cpu"], resumed["rng"][1]["cpu"])  # each rank its own masks
    model, resumed_model = load_file(tmp_path / "straight" / "model.safetensors"), load_file(
        killed / "model.safetensors")
    assert all(torch.equal(model[name], resumed_model[name]) for name in model)
    # what the killed run logged after its checkpoint is logged once, with the same figures
    assert _logged(killed) == _logged(tmp_path / "straight")
    results = [json.loads((folder / "results.json").read_text()) for folder in (tmp_path / "straight", killed)]
    assert results[0]["test_bits_per_dim"] == results[1]["test_bits_per_dim"]


def _flatten(value, prefix: str = "") -> dict:
    if isinstance(value, dict):
        return {k: v for key, item in value.items() for k, v in _flatten(item, f"{prefix}{key}.").items()}
    if isinstance(value, (list, tuple)):
        return {k: v for i, item in enumerate(value) for k, v in _flatten(item, f"{prefix}{i}.").items()}
    return {prefix.rstrip("."): value}


def _same(a, b) -> bool:
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


def _see_state(rank: int, world: int, rendezvous: str, folders: list[str], answers: str) -> None:
    import torch.distributed as dist

    from axial_attention.training import RunError
    from axial_attention.training.checkpoints import STATE_NAME, check_every_rank_sees

    dist.init_process_group("gloo", init_method=rendezvous, rank=rank, world_size=world)
    try:
        check_every_rank_sees(Path(folders[rank]) / STATE_NAME, world)
        answer = "no error"
    except RunError as error:
        answer = str(error)
    finally:
        dist.destroy_process_group()
    Path(answers, f"{rank}.txt").write_text(answer)


@pytest.mark.slow
def test_a_state_file_only_some_ranks_see_stops_every_rank_with_the_reason(tmp_path):
    """--out on each machine's own disk: rank 1's folder holds a state, rank 0's does not. Without the check
    rank 1 would resume at its step and rank 0 start at 0, and the collectives would hang."""
    import torch.multiprocessing as mp

    folders = [tmp_path / "node0", tmp_path / "node1"]
    for folder in folders:
        folder.mkdir()
    (folders[1] / "training_state.pt").write_bytes(b"a checkpoint")
    mp.spawn(_see_state, args=(2, f"file://{tmp_path / 'rendezvous'}", [str(f) for f in folders], str(tmp_path)),
             nprocs=2, join=True)
    for rank in range(2):
        answer = (tmp_path / f"{rank}.txt").read_text()
        assert "training_state.pt is seen by ranks [1] of 2 only; on several machines out must be one folder" in answer
