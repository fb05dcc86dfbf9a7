"""The multi-task set of MT-DNN: featurisation, the multi-head model, soft targets, the averaged loss by hand."""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest
import torch

from kd_core.data.features import FeatureConfig
from kd_core.data.schema import sentences_to_dataset
from kd_core.engine.inputs import objective_for
from kd_core.engine.steps import TermSpec
from kd_core.io.errors import ConfigError, ModelError
from kd_core.knowledge.table import METADATA_KEY, fixed, with_metadata
from kd_core.models.multihead import load_multitask_model, single_task_from_multitask
from kd_core.models.tokenizers import train_wordpiece_tokenizer
from kd_core.tasks.multitask import MultiTask
from kd_core.tasks.sentence import ClassificationTask, RegressionTask, SentenceOutput

WINDOWS = FeatureConfig(16, 0)


def three_tasks() -> MultiTask:
    return MultiTask([ClassificationTask("cls", ["no", "yes"]), RegressionTask("reg", pair=True),
                      ClassificationTask("three", ["a", "b", "c"])], with_teacher=["cls", "reg"])


def examples():
    return sentences_to_dataset([
        {"id": "r1", "task": "reg", "text_a": "a red car", "text_b": "a blue car", "score": 3.0},
        {"id": "c1", "task": "cls", "text_a": "good film", "label": 1},
        {"id": "t1", "task": "three", "text_a": "one two", "label": 2},
        {"id": "c2", "task": "cls", "text_a": "bad film", "label": 0},
        {"id": "r2", "task": "reg", "text_a": "a cat", "text_b": "a dog", "score": 1.0},
    ])


def test_features_are_grouped_by_task_with_their_task_index():
    task, rows = three_tasks(), examples()
    tokenizer = train_wordpiece_tokenizer(task.texts(rows), vocab_size=100)
    features = task.featurize(rows, tokenizer, WINDOWS)
    assert list(features["example_id"]) == ["c1", "c2", "r1", "r2", "t1"]
    arrays = task.arrays(features)
    assert arrays["task_index"].tolist() == [0, 0, 1, 1, 2]
    assert arrays["label"].tolist() == [1, 0, -1, -1, 2]
    assert np.isnan(arrays["score"][[0, 1, 4]]).all() and arrays["score"][[2, 3]].tolist() == [3.0, 1.0]
    assert (arrays["token_type_ids"][2] == 1).any() and not (arrays["token_type_ids"][0] == 1).any()  # pairs only


def test_multi_head_model_routes_each_row_to_its_task_head_and_round_trips(tmp_path):
    task, rows = three_tasks(), examples()
    tokenizer = train_wordpiece_tokenizer(task.texts(rows), vocab_size=100)
    arrays = task.arrays(task.featurize(rows, tokenizer, WINDOWS))
    model, _ = task.build_model("tiny-bert", 3, tokenizer)
    model.eval()
    logits = task.infer(model, arrays)["logits"]
    assert logits.shape == (5, 3)
    assert (logits[:2, 2] == 0).all() and (logits[2:4, 1:] == 0).all()  # columns past a head's width are 0
    pooled = model.bert(input_ids=torch.from_numpy(arrays["input_ids"]),
                        attention_mask=torch.from_numpy(arrays["attention_mask"]),
                        token_type_ids=torch.from_numpy(arrays["token_type_ids"])).pooler_output
    with torch.no_grad():
        assert np.allclose(logits[4], model.heads["three"](pooled[4]).numpy(), atol=1e-5)
        assert np.allclose(logits[2, 0], model.heads["reg"](pooled[2]).numpy(), atol=1e-5)
    model.save_pretrained(tmp_path / "mt")
    tokenizer.save_pretrained(tmp_path / "mt")
    again = load_multitask_model(str(tmp_path / "mt"), 99, task.task_heads())
    assert np.allclose(task.infer(again, arrays)["logits"], logits, atol=1e-6)
    with pytest.raises(ModelError, match="heads"):
        load_multitask_model(str(tmp_path / "mt"), 0, {"cls": 2})
    # per-task fine-tuning starts from the encoder and that task's head
    single = single_task_from_multitask(str(tmp_path / "mt"), "three", 3).eval()
    part = task.part("three")
    rows_three = {k: v[4:] for k, v in arrays.items()}
    assert np.allclose(part.infer(single, rows_three)["logits"], logits[4:], atol=1e-5)


def _member_table(task: str, ids: list[str], column: str, values: np.ndarray) -> pa.Table:
    dtype = pa.float16() if column == "logits" else pa.float32()
    table = pa.table({"example_id": pa.array(ids, pa.string()), "gold": pa.array([True] * len(ids)),
                      column: fixed(values.astype(dtype.to_pandas_dtype()), dtype)})
    return with_metadata(table, {METADATA_KEY: {"kind": "member", "task": task, "members": 1,
                                                "outputs": values.shape[1]}})


def test_soft_targets_merge_members_and_land_on_their_own_rows():
    task, rows = three_tasks(), examples()
    tokenizer = train_wordpiece_tokenizer(task.texts(rows), vocab_size=100)
    features = task.featurize(rows, tokenizer, WINDOWS)
    cls, reg = task.part("cls"), task.part("reg")
    cls_features = cls.featurize(rows.filter(lambda r: r["task"] == "cls"), tokenizer, WINDOWS)
    reg_features = reg.featurize(rows.filter(lambda r: r["task"] == "reg"), tokenizer, WINDOWS)
    # two members per task, written by hand: cls logits for c1, c2; reg values for r1, r2
    cls_tables = [_member_table("cls", ["c1", "c2"], "logits", np.array([[2.0, 0.0], [0.0, 0.5]])),
                  _member_table("cls", ["c1", "c2"], "logits", np.array([[0.0, 1.0], [1.0, 1.0]]))]
    reg_tables = [_member_table("reg", ["r1", "r2"], "values", np.array([[2.5], [1.0]])),
                  _member_table("reg", ["r1", "r2"], "values", np.array([[3.5], [2.0]]))]
    merged_cls = cls.merge(cls_tables, rows, cls_features, {})
    merged_reg = reg.merge(reg_tables, rows, reg_features, {})
    gathered = task.gather_knowledge({"cls": merged_cls, "reg": merged_reg}, features)
    assert gathered["has_teacher"].tolist() == [True, True, True, True, False]
    # q(c1) = mean(softmax([2, 0]), softmax([0, 1])) at tau = 1, by hand
    e = math.exp
    q_c1 = [(e(2) / (e(2) + 1) + 1 / (1 + e(1))) / 2, (1 / (e(2) + 1) + e(1) / (1 + e(1))) / 2]
    probabilities = torch.softmax(torch.from_numpy(gathered["teacher_logits"][0, :, :2]), -1).mean(0)
    assert probabilities.tolist() == pytest.approx(q_c1, abs=1e-3)
    assert gathered["teacher_values"][2:4].mean(-1).tolist() == [3.0, 1.5]  # the members' mean per example
    assert (gathered["teacher_logits"][2:] == 0).all()


def test_averaged_hard_and_soft_loss_matches_the_formula_by_hand():
    task = three_tasks()
    alpha, tau = 0.5, 2.0
    objective = objective_for((TermSpec("hard", 1 - alpha), TermSpec("soft", alpha, tau)), task)
    logits = torch.tensor([[1.0, -1.0, 0.0], [0.5, 0.2, -0.3], [1.5, 0.0, 0.0]])
    batch = {
        "task_index": torch.tensor([0, 2, 1]), "label": torch.tensor([1, 2, -1]),
        "score": torch.tensor([float("nan"), float("nan"), 2.0]),
        "teacher_logits": torch.tensor([[[2.0, 0.0, 0.0], [0.0, 1.0, 0.0]], [[0.0] * 3] * 2, [[0.0] * 3] * 2]),
        "teacher_values": torch.tensor([[0.0, 0.0], [0.0, 0.0], [1.0, 2.0]]),
        "has_teacher": torch.tensor([True, False, True]),
    }
    total, parts = objective(SentenceOutput(logits), batch, progress=0.0)
    e, log = math.exp, math.log
    # row 0 (cls, teacher): CE to gold 1, and tau^2 * CE between q = mean softmax(t/tau) and softmax(s/tau)
    hard0 = -(-1.0 - log(e(1.0) + e(-1.0)))
    q = [(e(1) / (e(1) + 1) + 1 / (1 + e(0.5))) / 2, (1 / (e(1) + 1) + e(0.5) / (1 + e(0.5))) / 2]
    log_p = [0.5 - log(e(0.5) + e(-0.5)), -0.5 - log(e(0.5) + e(-0.5))]
    soft0 = tau**2 * -(q[0] * log_p[0] + q[1] * log_p[1])
    # row 1 (three labels, no teacher): the hard loss with weight 1
    hard1 = -(-0.3 - log(e(0.5) + e(0.2) + e(-0.3)))
    # row 2 (regression, teacher): (1.5 - 2)^2 to gold, (1.5 - mean(1, 2))^2 = 0 to the teachers
    hard2, soft2 = 0.25, 0.0
    rows = [(1 - alpha) * hard0 + alpha * soft0, hard1, (1 - alpha) * hard2 + alpha * soft2]
    assert float(total) == pytest.approx(sum(rows) / 3, rel=1e-5)
    assert parts["loss/hard"] == pytest.approx((hard0 + hard1 + hard2) / 3, rel=1e-5)


def test_scores_are_per_task_with_the_average_of_primaries():
    task, rows = three_tasks(), examples()
    tokenizer = train_wordpiece_tokenizer(task.texts(rows), vocab_size=100)
    features = task.featurize(rows, tokenizer, WINDOWS)
    arrays = task.arrays(features)
    # c1 right, c2 wrong (accuracy 50); r1, r2 predicted 2.0, 0.5 (Pearson 100); t1 right (accuracy 100)
    logits = np.array([[0.0, 1.0, 0.0], [0.0, 1.0, 0.0], [2.0, 0.0, 0.0], [0.5, 0.0, 0.0], [0.0, 0.0, 3.0]])
    scores = task.scores(rows, features, arrays, {"logits": logits})
    assert scores["cls/accuracy"] == 50.0 and scores["reg/pearson"] == pytest.approx(100.0)
    assert scores["three/accuracy"] == 100.0
    assert scores["average"] == pytest.approx((50.0 + 100.0 + 100.0) / 3)


def test_a_multi_task_set_refuses_duplicates_and_unknown_teacher_tasks():
    with pytest.raises(ConfigError, match="listed twice"):
        MultiTask([ClassificationTask("a", ["x", "y"]), RegressionTask("a")])
    with pytest.raises(ConfigError, match="no task 'b'"):
        MultiTask([ClassificationTask("a", ["x", "y"])], with_teacher=["b"])
