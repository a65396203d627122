"""One model trained by the train stage on two Dask workers at once (``train.data_parallel``:
torch DDP over gloo), against the same stage in one process."""

from __future__ import annotations

import os
import re
import shutil
import signal
import threading
import time

import pytest
import torch

from pdeflow.storage import RunStore
from pdeflow.tasks.config import ConfigError, load_config
from pdeflow.tasks.stages import run_stage
from pdeflow.tasks.stages.ddp import run_ranks
from pdeflow.tasks.stages.train import TrainingLog
from pdeflow.tasks.surrogates.ddp import PeerRankFailed
from pdeflow.tasks.surrogates.factory import check_trainable
from pdeflow.tasks.surrogates.training import NonFiniteLoss, batch_share, make_optimizer
from tests.conftest import TINY

# 3 epochs (the span); batch 25 is odd, so the two ranks take 12 and 13 of every
# batch and must weight their shares by their sizes.
TRAIN = ["train={width: 8, modes: 8, n_layers: 2, epochs: 3, batch_size: 25}"]


@pytest.fixture
def idle(client):
    """The session's cluster once no task runs on it: a rank needs a whole worker (one thread
    each), and another test file's DDP ranks may still be leaving a collective."""
    deadline = time.monotonic() + 120
    while any(client.processing().values()):
        assert time.monotonic() < deadline, f"the workers stay busy: {client.processing()}"
        time.sleep(0.1)
    return client


@pytest.fixture(scope="module")
def data(client):
    cfg = load_config(TINY, ["store=dp-data", *TRAIN])
    run_stage("generate", cfg, client=client)
    return cfg


def _copy(cfg, runs_dir, name: str, *sets: str):
    shutil.copytree(runs_dir / cfg.store, runs_dir / name)
    return load_config(TINY, [f"store={name}", *TRAIN, *sets])


def _unit(cfg) -> dict:
    """The record's row of the unit, with the stage's loss history."""
    details = RunStore.named(cfg.store).record("train").details
    return {**details["units"][0], "history": details["history"]}


def _weights(cfg) -> dict:
    path = RunStore.named(cfg.store).unit_dir("train", "model") / "model.pt"
    return torch.load(path, weights_only=True)


def test_batch_shares_cover_a_batch_once_in_rank_order():
    for n in range(0, 30):
        for world in (1, 2, 3, 5):
            rows = [batch_share(n, r, world) for r in range(world)]
            assert rows[0].start == 0 and rows[-1].stop == n
            assert all(a.stop == b.start for a, b in zip(rows, rows[1:], strict=False))
            assert max(s.stop - s.start for s in rows) - min(s.stop - s.start for s in rows) <= 1


def test_two_ranks_follow_one_process_and_resume_from_their_checkpoint(data, runs_dir, idle):
    client = idle
    one = _copy(data, runs_dir, "dp-one")
    two = _copy(data, runs_dir, "dp-two", "train.data_parallel=2")
    run_stage("train", one)  # in this process, one thread
    run_stage("train", two, client=client)
    single, ranks = _unit(one), _unit(two)

    # Both workers trained it, one rank each; rank 0 wrote the result.
    workers = set(client.scheduler_info()["workers"])
    assert len(set(ranks["ranks"])) == 2 and set(ranks["ranks"]) == workers
    assert ranks["worker"] == ranks["ranks"][0] and ranks["epochs_this_attempt"] == 3

    # The same loss curve: the ranks' averaged gradient is the whole batch's, so only the
    # order of float32 sums differs. The bound is 1e-5 relative over 3 epochs; a
    # wrong share weighting (the ranks' means averaged as if the shares were equal) moved the
    # losses by 1e-3 to 3e-3 relative here.
    for key in ("train_loss", "val_loss"):
        a = torch.tensor([h[key] for h in single["history"]], dtype=torch.float64)
        b = torch.tensor([h[key] for h in ranks["history"]], dtype=torch.float64)
        print(f"{key}: largest relative difference {float(((b - a) / a).abs().max()):.1e}")
        assert len(a) == 3 and torch.allclose(b, a, rtol=1e-5, atol=0), (key, a, b)
    wa, wb = _weights(one), _weights(two)
    assert all(torch.allclose(wb[k], wa[k], rtol=1e-4, atol=1e-5) for k in wa)

    # Killed after epoch 2: the record, the result and epoch 3's checkpoint are gone. The ranks
    # resume together from epoch 2, train one epoch, and end where the first run ended.
    store = RunStore.named(two.store)
    unit_dir = store.unit_dir("train", "model")
    for name in ("result.json", "model.pt", "predictions.pt"):
        (unit_dir / name).unlink()
    for path in (unit_dir / "checkpoints").glob("epoch-000003.*"):
        path.unlink()
    kept = unit_dir / "checkpoints" / "epoch-000002.pt"
    stamp = (kept.stat().st_ino, kept.stat().st_mtime_ns)
    (store.meta / "stages" / "train.json").unlink()
    again = run_stage("train", two, client=client)
    assert again.computed == 1
    resumed = _unit(two)
    assert resumed["epochs_this_attempt"] == 1
    assert resumed["history"] == ranks["history"]  # same ranks, same sums: bit for bit
    assert (kept.stat().st_ino, kept.stat().st_mtime_ns) == stamp
    w = _weights(two)
    assert all(torch.equal(w[k], wb[k]) for k in wb)


def test_a_rank_killed_mid_training_fails_the_stage_fast_and_the_rerun_resumes(
    data, runs_dir, idle
):
    """SIGKILL rank 1's worker once rank 0 has checkpointed an epoch. Rank 0's collective
    fails at once (not after the 300-s timeout), the stage raises naming the unit, and the run
    again resumes from the checkpoint and ends with the weights of an undisturbed run."""
    client = idle
    sets = ("train.data_parallel=2", "train.epochs=4")
    ref = _copy(data, runs_dir, "dp-kill-ref", *sets)
    run_stage("train", ref, client=client)
    cfg = _copy(data, runs_dir, "dp-kill", *sets)
    store = RunStore.named(cfg.store)
    log = TrainingLog(store, "model")
    pids = client.run(os.getpid)
    rank1 = sorted(pids)[1]  # ranks go to the workers in address order
    killed = {}

    def killer() -> None:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and not killed:
            done = [e["epoch"] for e in log.read() if e["event"] == "epoch"]
            if done:
                os.kill(pids[rank1], signal.SIGSTOP)  # nothing more completes until the kill
                killed["after"] = max(e["epoch"] for e in log.read() if e["event"] == "epoch")
                killed["at"] = time.monotonic()
                os.kill(pids[rank1], signal.SIGKILL)
            time.sleep(0.02)

    thread = threading.Thread(target=killer)
    thread.start()
    says = r"train: unit model \(2 data-parallel ranks\) failed"
    with pytest.raises(RuntimeError, match=says) as failure:
        run_stage("train", cfg, client=client)
    failed_after = time.monotonic() - killed["at"]
    print(f"failed {failed_after:.1f} s after the kill: {failure.value}")
    thread.join()
    assert 1 <= killed["after"] < 4
    # Rank 0 stops at once; the stage then gives rank 1's lost task run_ranks' 10-s grace.
    assert failed_after < 60, failed_after
    client.wait_for_workers(2, timeout=60)  # the nanny restarts the killed worker
    again = run_stage("train", cfg, client=client)
    starts = [e for e in log.read() if e["event"] == "start"]
    assert len(starts) == 2 and starts[1]["resumed_from_epoch"] >= killed["after"]
    assert again.computed == 4 - starts[1]["resumed_from_epoch"]
    ref_w = _weights(ref)
    assert all(torch.equal(_weights(cfg)[k], ref_w[k]) for k in ref_w)


def epoch_with_a_broken_rank_1(rank: int, world: int, init_method: str, how: str) -> str:
    """A rank task (workers import this module by name): one epoch of 6 batches of 8 where
    rank 1's third batch cannot be read (``how="read"``) or holds a NaN in its share
    (``how="nan"``); returns how the rank ended."""
    from pdeflow.tasks.surrogates.data_parallel import RankStep, process_group
    from pdeflow.tasks.surrogates.training import train_epoch
    from tests.test_ddp import DATA_SEED, advection_pairs, build_surrogate

    u, p, u_next = advection_pairs(48, DATA_SEED)
    if how == "nan" and rank == 1:
        u_next[2 * 8 + 6, 0, 3] = float("nan")  # row 6 of batch 3: rank 1's share (4..7)

    def batches():
        for b in range(6):
            if how == "read" and rank == 1 and b == 2:
                raise OSError("rank 1 could not read batch 3")
            rows = slice(8 * b, 8 * (b + 1))
            yield u[rows], p[rows], u_next[rows]

    model = build_surrogate(48, DATA_SEED)
    optimizer = make_optimizer(model, 3e-3, 0.0)
    with process_group(rank, world, init_method, torch.device("cpu")):
        step = RankStep(model, rank, world, torch.device("cpu"))
        try:
            train_epoch(model, optimizer, batches(), data_parallel=step)
        except PeerRankFailed as err:
            return f"stopped by {err.failed}"
    return "finished"


@pytest.mark.parametrize(
    ("how", "error"), [("read", OSError), ("nan", NonFiniteLoss)], ids=["read", "nan"]
)
def test_a_batch_failing_on_one_rank_stops_every_rank_at_that_batch(idle, how, error):
    """The failing rank raises its own error, the other stops in the same collective (not
    after the group's 300-s timeout); a NaN in one rank's share stops every rank before the
    step, as one process would stop."""
    t0 = time.monotonic()
    with pytest.raises(error) as raised:
        run_ranks(idle, epoch_with_a_broken_rank_1, (how,), "cpu", 2, grace_s=60)
    # About 1 s here; a rank left waiting would hold the call for the group's timeout (300 s).
    # The bound leaves room for a loaded CI machine.
    assert time.monotonic() - t0 < 150
    if how == "read":
        assert "rank 1 could not read batch 3" in str(raised.value)
    else:
        assert raised.value.batch == 3


@pytest.mark.parametrize(
    ("sets", "says"),
    [
        (["train.data_parallel=2", "train.ensemble=2"], "train.data_parallel=2 trains one model"),
        (["train.data_parallel=0"], "train.data_parallel"),
    ],
)
def test_bad_data_parallel_settings_are_refused_naming_the_field(sets, says):
    with pytest.raises(ConfigError, match=re.escape(says)):
        load_config(TINY, sets)


def test_more_ranks_than_local_workers_are_refused_before_training():
    cfg = load_config(TINY, ["train.data_parallel=3"])  # tiny.yaml: 2 workers
    with pytest.raises(ValueError, match=re.escape("choose 1..2")):
        check_trainable(cfg)
