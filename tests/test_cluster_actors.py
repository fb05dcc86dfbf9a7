"""Model actors on a real local Ray: same results as one process, bounded fan-out, restarts."""

import os
import signal
import time

import numpy as np
import pytest

from cluster.fanout import run_bounded
from cluster.model_actor import create_model_actor
from cluster.runtime import Placement, placement_for
from kd_core.batches import feature_arrays
from kd_core.data.features import FeatureConfig, featurize
from kd_core.data.synthetic import generate
from kd_core.knowledge.span import KnowledgeConfig, member_knowledge
from kd_core.models import build_preset_model, train_wordpiece_tokenizer
from kd_core.objectives import A2DConfig, a2d_objective
from kd_core.train import TrainConfig, train

ONE_THREAD = Placement(num_cpus=0.5, num_gpus=0.0, torch_threads=1)


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    ds = generate(n_per_domain=10, seed=1)
    tok = train_wordpiece_tokenizer(list(ds["context"]) + list(ds["question"]), vocab_size=500)
    tok_dir = tmp_path_factory.mktemp("tok")
    tok.save_pretrained(tok_dir)
    features = featurize(ds, tok, FeatureConfig(max_length=96, doc_stride=32))
    return tok, tok_dir, features, feature_arrays(features)


def test_actor_training_and_knowledge_equal_the_same_work_in_one_process(ray_session, data, tmp_path):
    import torch

    tok, tok_dir, features, arrays = data
    objective = a2d_objective(A2DConfig(), use_knowledge=False)
    config = TrainConfig(epochs=1, batch_size=8, seed=3)
    actor = create_model_actor("tiny-bert", 7, tok_dir, tmp_path / "member", ONE_THREAD)
    ray = ray_session
    ref = ray.put(arrays)
    ray.get(actor.train.remote(ref, objective, config), timeout=300)
    table = ray.get(actor.knowledge.remote(ref, features["feature_id"], KnowledgeConfig(top_k=3)), timeout=300)

    torch.set_num_threads(1)
    local = build_preset_model("tiny-bert", tok, seed=7)
    train(local, arrays, objective, config, progress=False)
    expected = member_knowledge(local, arrays, features["feature_id"], KnowledgeConfig(top_k=3))
    assert table.column("feature_id").equals(expected.column("feature_id"))
    got = np.stack(table.column("start_logits").to_numpy(zero_copy_only=False))
    want = np.stack(expected.column("start_logits").to_numpy(zero_copy_only=False))
    assert np.allclose(got, want, atol=2e-3)  # float16 storage: equal up to one rounding step
    assert table.column("topk_start").equals(expected.column("topk_start"))
    assert (tmp_path / "member" / "model.safetensors").exists()  # saved for restarts
    ray.kill(actor, no_restart=True)


def test_killed_actor_restarts_with_its_trained_weights(ray_session, data, tmp_path):
    _, tok_dir, _, arrays = data
    ray = ray_session
    ref = ray.put(arrays)
    actor = create_model_actor("tiny-bert", 1, tok_dir, tmp_path / "m", ONE_THREAD)
    ray.get(actor.train.remote(ref, a2d_objective(A2DConfig(), use_knowledge=False), TrainConfig(epochs=1, batch_size=8)),
            timeout=300)
    before, _ = ray.get(actor.outputs.remote(ref), timeout=300)
    info = ray.get(actor.info.remote(), timeout=60)
    assert not info["restored"]
    os.kill(info["pid"], signal.SIGKILL)  # a real process death
    deadline = time.time() + 120
    while True:
        try:
            restarted = ray.get(actor.info.remote(), timeout=120)
            break
        except ray.exceptions.RayActorError:
            if time.time() > deadline:
                raise
            time.sleep(1)
    assert restarted["pid"] != info["pid"] and restarted["restored"]
    after, _ = ray.get(actor.outputs.remote(ref), timeout=300)
    assert np.allclose(before.start_logits, after.start_logits, atol=1e-5)
    ray.kill(actor, no_restart=True)


def test_run_bounded_keeps_order_and_limits_calls_in_flight(ray_session):
    ray = ray_session

    @ray.remote(num_cpus=0)
    def stamp(i):
        start = time.time()
        time.sleep(0.3)
        return i, start, time.time()

    results = run_bounded([lambda i=i: stamp.remote(i) for i in range(4)], max_concurrency=2)
    assert [r[0] for r in results] == [0, 1, 2, 3]
    events = sorted([(r[1], 1) for r in results] + [(r[2], -1) for r in results])
    running = np.cumsum([e[1] for e in events])
    assert running.max() <= 2
    with pytest.raises(ValueError):
        run_bounded([], max_concurrency=0)


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
