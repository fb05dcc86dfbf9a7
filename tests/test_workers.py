"""Step workers on a real local Ray: the same results as one process, restarts after SIGKILL, the pool, placement."""

import os
import signal
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from cluster.job_steps import PoolSteps
from cluster.runtime import Placement, placement_for
from cluster.scheduler import WorkerPool
from cluster.worker import create_worker
from kd_core.engine.execute import execute
from kd_core.engine.local import flow, in_order
from kd_core.engine.prepare import SpanQAData, build_span_workspace
from kd_core.engine.steps import CollectStep, TermSpec, TrainStep, model_ref
from kd_core.knowledge.table import read_knowledge, unfixed
from kd_core.training.loop import TrainConfig

ONE_THREAD = Placement(num_cpus=0.5, num_gpus=0.0, torch_threads=1)
DATA = SpanQAData(synthetic_size=20, vocab_size=500, seed=1)
TRAIN = TrainStep("member", "tiny-bert", 7, "teacher", (TermSpec("hard"),),
                  TrainConfig(epochs=3, batch_size=8, seed=3, checkpoint_every=2))
COLLECT = CollectStep("knowledge", model_ref("member"), "teacher", options=(("top_k", 3), ("with_attention", True)))


def _weights(result, ws):
    return load_file(os.path.join(ws.resolve(result["model_dir"]), "model.safetensors"))


@pytest.fixture(scope="module")
def in_one_process(tmp_path_factory):
    """The reference: both steps executed in this process with one torch thread."""
    torch.set_num_threads(1)
    ws = build_span_workspace(DATA, "tiny-bert", "tiny-bert-1l", tmp_path_factory.mktemp("local"))
    return ws, execute(TRAIN, ws), execute(COLLECT, ws)


def test_steps_on_a_worker_equal_the_same_steps_in_one_process(ray_session, in_one_process, tmp_path):
    local, trained, collected = in_one_process
    ws = build_span_workspace(DATA, "tiny-bert", "tiny-bert-1l", tmp_path)
    worker = create_worker(ONE_THREAD)
    ws_ref = ray_session.put(ws)
    on_worker = ray_session.get(worker.run.remote(TRAIN, ws_ref, None, 1), timeout=300)
    assert on_worker["scores"] == trained["scores"]
    a, b = _weights(trained, local), _weights(on_worker, ws)
    assert all(torch.equal(a[k], b[k]) for k in a)
    knowledge = ray_session.get(worker.run.remote(COLLECT, ws_ref, None, 1), timeout=300)
    got, want = read_knowledge(ws.resolve(knowledge["path"])), read_knowledge(local.resolve(collected["path"]))
    assert got.column("feature_id").equals(want.column("feature_id"))
    assert got.column("topk_start").equals(want.column("topk_start"))
    width = len(got.column("start_logits")[0])
    assert np.array_equal(unfixed(got.column("start_logits"), (width,), np.float32),
                          unfixed(want.column("start_logits"), (width,), np.float32))
    ray_session.kill(worker, no_restart=True)


@pytest.mark.slow
def test_a_worker_killed_mid_step_is_restarted_and_the_step_resumes_from_its_checkpoint(ray_session, in_one_process,
                                                                                        tmp_path):
    local, trained, _ = in_one_process
    ws = build_span_workspace(DATA, "tiny-bert", "tiny-bert-1l", tmp_path)
    worker = create_worker(ONE_THREAD)
    pid = ray_session.get(worker.info.remote(), timeout=120)["pid"]
    call = worker.run.remote(TRAIN, ray_session.put(ws), None, 1)
    checkpoint = ws.step_dir("member") / "checkpoint" / "state.json"
    deadline = time.monotonic() + 300
    while not checkpoint.exists():
        assert time.monotonic() < deadline, "no checkpoint appeared"
        time.sleep(0.05)
    os.kill(pid, signal.SIGKILL)  # a real process death in the middle of the step
    result = ray_session.get(call, timeout=600)  # Ray restarts the worker and retries the call
    assert ray_session.get(worker.info.remote(), timeout=120)["pid"] != pid
    assert result["resumed_from_step"] > 0
    a, b = _weights(trained, local), _weights(result, ws)
    assert all(torch.equal(a[k], b[k]) for k in a)  # the same weights as the uninterrupted step
    ray_session.kill(worker, no_restart=True)


@pytest.mark.slow
def test_a_worker_that_dies_every_time_ends_with_an_error_not_a_crash_loop(ray_session, tmp_path):
    """Restarts and retries are bounded: a call whose worker dies each time is retried while the worker can be
    restarted, and fails once its two restarts are spent (three deaths); the worker stays dead, and a later call
    fails at once."""
    worker = create_worker(ONE_THREAD)
    deaths = tmp_path / "deaths"

    def die(actor, record):  # runs in the worker's process, which it kills
        with open(record, "a") as out:
            out.write(f"{os.getpid()}\n")
        os.kill(os.getpid(), signal.SIGKILL)

    started = time.monotonic()
    with pytest.raises(ray_session.exceptions.RayActorError):
        ray_session.get(worker.__ray_call__.remote(die, str(deaths)), timeout=300)  # the call and its retries
    assert len(set(deaths.read_text().split())) == 3  # three processes: the first and its two restarts
    with pytest.raises(ray_session.exceptions.RayActorError):
        ray_session.get(worker.info.remote(), timeout=60)  # dead for good, at once
    assert time.monotonic() - started < 300


@pytest.mark.slow
def test_the_pool_gives_each_worker_one_call_at_a_time_and_returns_calls_as_they_finish(ray_session):
    pool = WorkerPool(2)
    try:
        events: list[tuple] = []
        index: dict = {}
        infos: dict[int, dict] = {}
        for i in range(5):
            if not pool.idle():  # both workers busy: a call can only go once one has finished
                for ref, info in pool.wait():
                    infos[index[ref]] = info
                    events.append(("done", index.pop(ref)))
            ref, place = pool.submit(lambda worker: worker.info.remote())
            index[ref] = i
            events.append(("start", i, place))
        while index:
            for ref, info in pool.wait():
                infos[index[ref]] = info
                events.append(("done", index.pop(ref)))
        assert sorted(infos) == [0, 1, 2, 3, 4] and len({info["pid"] for info in infos.values()}) == 2
        assert pool.places == ["w0 cpu", "w1 cpu"]  # one node: no node address (cluster.progress.worker_place)
        assert {e[2] for e in events if e[0] == "start"} == set(pool.places)
        running = 0
        for event in events:  # at most two calls are running at any moment
            running += 1 if event[0] == "start" else -1
            assert 0 <= running <= 2
        ordered = [lambda worker, k=k: worker.__ray_call__.remote(lambda actor, k=k: (k, os.getpid())) for k in range(5)]
        assert [k for k, _ in pool.run(ordered)] == [0, 1, 2, 3, 4]  # results in the order of the calls
        assert pool.threads(1) == 2 and pool.threads(2) == 1 and pool.threads(5) == 1  # 2 CPUs shared
        with pool.paused():
            assert pool.workers == []
        assert len(pool.run([lambda worker: worker.info.remote()])) == 1
    finally:
        pool.shutdown()
    with pytest.raises(ValueError):
        WorkerPool(0)


@pytest.mark.slow
def test_a_step_starts_when_its_inputs_are_done_not_when_its_stage_is(ray_session, tmp_path):
    """Two members of one stage, the first far slower; the fast member's knowledge (the next stage) starts on the
    free worker while the slow member still trains, and reads only its own member: no stage barrier."""
    ws = build_span_workspace(DATA, "tiny-bert", "tiny-bert-1l", tmp_path)
    slow = TrainStep("slow", "tiny-bert", 7, "teacher", (TermSpec("hard"),), TrainConfig(epochs=12, batch_size=4, seed=3))
    fast = TrainStep("fast", "tiny-bert", 8, "teacher", (TermSpec("hard"),), TrainConfig(epochs=0.2, batch_size=8, seed=3))
    collects = [CollectStep(f"knowledge-{m.name}", model_ref(m.name), "teacher", options=(("top_k", 1),
                                                                                          ("with_attention", False)))
                for m in (slow, fast)]
    pool = WorkerPool(2)
    try:
        steps = PoolSteps(pool, ws, ray_session.put(ws))
        results = flow(in_order([slow, fast], collects), steps)
    finally:
        pool.shutdown()
    assert set(results) == {"slow", "fast", "knowledge-slow", "knowledge-fast"}
    at = {(event, name): seconds for event, name, seconds in steps.events}
    assert at[("done", "fast")] <= at[("start", "knowledge-fast")] < at[("done", "slow")]
    assert at[("done", "slow")] <= at[("start", "knowledge-slow")]
    assert read_knowledge(ws.resolve(results["knowledge-fast"]["path"])).num_rows > 0


def test_placement_uses_gpus_when_present_else_cpu_shares():
    gpu = placement_for({"CPU": 16, "GPU": 4}, num_models=4, max_concurrency=4)
    assert gpu.num_gpus == 1.0 and gpu.torch_threads == 4
    shared = placement_for({"CPU": 8, "GPU": 2}, num_models=4, max_concurrency=4)
    assert shared.num_gpus == 0.5
    cpu = placement_for({"CPU": 2}, num_models=2, max_concurrency=2)
    assert (cpu.num_gpus, cpu.num_cpus, cpu.torch_threads) == (0.0, 1.0, 1)
    serial = placement_for({"CPU": 2}, num_models=2, max_concurrency=1)
    assert serial.torch_threads == 2


def test_placement_shares_never_add_up_to_more_than_the_cluster():
    # 3 models on 2 CPUs (or 2 GPUs): 3 x 0.667 = 2.001 would leave one actor pending forever.
    three = placement_for({"CPU": 2, "GPU": 2}, num_models=3, max_concurrency=3)
    assert 3 * three.num_cpus <= 2 and 3 * three.num_gpus <= 2
    assert three.num_cpus == pytest.approx(0.666)
