"""Different students without Ray: student kinds, example-keyed knowledge read through another tokenizer, the noisy
teacher, layer distillation with a projection, the teacher-assistant chain and the refusals of bad settings."""

import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from kd_core.engine.execute import execute
from kd_core.engine.inputs import knowledge_for, load_model
from kd_core.engine.local import InTurn, drive, flow
from kd_core.engine.prepare import StudentsData, build_students_workspace
from kd_core.engine.steps import CollectStep, TermSpec, TrainStep
from kd_core.engine.workspace import absolute_result
from kd_core.io.errors import ConfigError
from kd_core.knowledge.manifest import read_manifest
from kd_core.knowledge.table import read_knowledge, write_knowledge
from kd_core.methods.students import StudentsSettings, plan_students, students_recipe
from kd_core.objectives.layer_distillation import LayerDistillation
from kd_core.objectives.layer_maps import uniform_layer_map
from kd_core.objectives.noise import NoisyTeacher
from kd_core.training.loop import TrainConfig

TASKS = """tasks:
  - {name: sentiment, synthetic: sentiment, kind: classification, labels: [negative, positive], size: 240}
  - {name: rating, synthetic: rating, kind: regression, size: 60}
"""


@pytest.fixture(scope="module")
def tasks_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("tasks") / "tasks.yaml"
    path.write_text(TASKS)
    return str(path)


@pytest.fixture(scope="module")
def taught(tmp_path_factory, tasks_file):
    """A workspace with an augmented transfer set and a trained tiny-bert teacher whose knowledge covers it."""
    torch.set_num_threads(1)
    data = StudentsData(tasks=tasks_file, vocab_size=400, word_vocab_size=300, augment=True, n_iter=2)
    ws = build_students_workspace(data, "tiny-bert", tmp_path_factory.mktemp("students"))
    # 10 epochs: at 6 the teacher (~60% on dev) may predict one class for most test rows, so that an untrained
    # student agrees with it as often as a trained one.
    execute(TrainStep("teacher", "tiny-bert", 0, "teacher", (TermSpec("hard"),),
                      TrainConfig(epochs=10, learning_rate=2e-3, batch_size=16)), ws)
    execute(CollectStep("knowledge", "@teacher", "teacher", split="transfer"), ws)
    return ws


def test_augmented_rows_carry_no_label_and_the_knowledge_table_flags_them(taught):
    transfer = taught.splits["transfer"]
    augmented = [i for i, example_id in enumerate(transfer["id"]) if "~aug" in example_id]
    assert len(transfer) > len(taught.splits["train"]) and len(augmented) == len(transfer) - len(taught.splits["train"])
    assert all(transfer[i]["label"] is None and transfer[i]["score"] is None for i in augmented)
    table = read_knowledge(taught.resolve(json.loads(taught.result_path("knowledge").read_text())["path"]))
    gold = dict(zip(table.column("example_id").to_pylist(), table.column("gold").to_pylist()))
    assert {k for k, v in gold.items() if not v} == {transfer[i]["id"] for i in augmented}
    # the gold-label loss is 0 on them: their labels are -1 in the arrays
    _, arrays = taught.features("words", "transfer")
    assert (arrays["label"][augmented] == -1).all() and (np.delete(arrays["label"], augmented) >= 0).all()


def test_a_bilstm_learns_from_the_teachers_example_keyed_knowledge_through_its_own_tokenizer(taught, tmp_path):
    # The same example ids read through the word tokenizer get the teacher's rows, even from a shuffled table.
    path = taught.resolve(json.loads(taught.result_path("knowledge").read_text())["path"])
    expected = knowledge_for("knowledge", "teacher", "transfer", taught)["teacher_logits"]
    table = read_knowledge(path)
    write_knowledge(table.take(np.random.default_rng(0).permutation(table.num_rows)), path)
    through_words = knowledge_for("knowledge", "words", "transfer", taught)["teacher_logits"]
    write_knowledge(table, path)
    np.testing.assert_array_equal(through_words, expected)
    assert taught.tokenizer("words").get_vocab() != taught.tokenizer("teacher").get_vocab()

    # Knowledge only (alpha = 1, no gold label): the BiLSTM ends up agreeing with the teacher on test.
    ws = replace(taught, run_dir=tmp_path, _features={}, _hashes={})
    ws_knowledge = ws.result_path("knowledge")
    ws_knowledge.parent.mkdir(parents=True)
    # a result taken into another run directory names the first one's files absolutely
    ws_knowledge.write_text(json.dumps(absolute_result(json.loads(taught.result_path("knowledge").read_text()),
                                                       taught.store)))
    student = TrainStep("bilstm", "bilstm-E32-H32", 1, "words", (TermSpec("soft", 1.0, 1.0),),
                        TrainConfig(epochs=6, learning_rate=3e-3, batch_size=16), knowledge="knowledge",
                        split="transfer")
    execute(student, ws)
    teacher = load_model(str(taught.step_dir("teacher") / "model"), 0, "teacher", taught, "cpu")
    bilstm = load_model("@bilstm", 0, "words", ws, "cpu")
    assert type(bilstm).__name__ == "BiLSTMForSequenceClassification"
    t = taught.task.infer(teacher, taught.features("teacher", "test")[1])["logits"].argmax(-1)
    s = ws.task.infer(bilstm, ws.features("words", "test")[1])["logits"].argmax(-1)
    untrained = load_model("bilstm-E32-H32", 1, "words", ws, "cpu")
    s0 = ws.task.infer(untrained, ws.features("words", "test")[1])["logits"].argmax(-1)
    assert (s == t).mean() >= 0.8 and (s == t).mean() > (s0 == t).mean() + 0.15, ((s == t).mean(), (s0 == t).mean())


def test_bilstm_word_vectors_start_from_the_teachers_embeddings(taught, tmp_path):
    ws = replace(taught, run_dir=tmp_path, _features={}, _hashes={})
    teacher_dir = str(taught.step_dir("teacher") / "model")
    step = TrainStep("b", "bilstm-E64-H16", 0, "words", (TermSpec("hard"),), TrainConfig(epochs=0.01),
                     embeddings_from=teacher_dir)
    from kd_core.engine.train_step import init_embeddings as _init_embeddings

    model = load_model(step.model, 0, "words", ws, "cpu")
    _init_embeddings(model, step, ws)
    teacher = load_model(teacher_dir, 0, "teacher", taught, "cpu")
    word = "great"
    pieces = taught.tokenizer("teacher")(word, add_special_tokens=False)["input_ids"]
    assert len(pieces) == 1  # a whole word of the teacher's vocabulary: its row exactly
    row = model.get_input_embeddings().weight[ws.tokenizer("words").convert_tokens_to_ids(word)]
    assert torch.equal(row, teacher.get_input_embeddings().weight[pieces[0]])
    with pytest.raises(ConfigError, match="untrained preset"):
        _init_embeddings(model, replace(step, embeddings_from="tiny-bert"), ws)


def test_noise_is_multiplicative_seeded_per_epoch_and_independent_of_batching():
    logits = np.arange(24, dtype=np.float32).reshape(6, 2, 2) - 10
    noisy = NoisyTeacher(0.5, 3, {"teacher_logits": logits.shape})
    batch = {"teacher_logits": torch.from_numpy(logits[[4, 1]])}
    out = noisy(batch, 2, np.array([4, 1]))["teacher_logits"].numpy()
    xi = 0.5 * np.random.default_rng([3, 2]).standard_normal((6, 2, 2))  # the module doc's draw for (seed 3, epoch 2)
    np.testing.assert_allclose(out, logits[[4, 1]] * (1 + xi[[4, 1]]), rtol=1e-6)
    alone = noisy({"teacher_logits": torch.from_numpy(logits[[1]])}, 2, np.array([1]))["teacher_logits"].numpy()
    np.testing.assert_array_equal(alone[0], out[1])  # row 1's noise does not depend on its batch
    other_epoch = noisy(batch, 3, np.array([4, 1]))["teacher_logits"].numpy()
    assert not np.allclose(other_epoch, out)
    again = NoisyTeacher(0.5, 3, {"teacher_logits": logits.shape})(batch, 2, np.array([4, 1]))["teacher_logits"]
    np.testing.assert_array_equal(again.numpy(), out)
    with pytest.raises(ConfigError, match="sigma"):
        NoisyTeacher(-0.1, 0, {"teacher_logits": (1,)})


def test_a_noisy_teacher_changes_training_and_stays_reproducible(taught, tmp_path):
    def trained(noise, folder):
        ws = replace(taught, run_dir=tmp_path / folder, _features={}, _hashes={})
        ws.result_path("knowledge").parent.mkdir(parents=True)
        ws.result_path("knowledge").write_text(json.dumps(absolute_result(taught.result("knowledge"), taught.store)))
        step = TrainStep("s", "tiny-bert-1l", 1, "teacher", (TermSpec("soft", 1.0, 2.0),),
                         TrainConfig(epochs=2, batch_size=32), knowledge="knowledge", split="transfer",
                         teacher_noise=noise)
        execute(step, ws)
        return load_model("@s", 0, "teacher", ws, "cpu").state_dict()

    clean, noisy, noisy_again = trained(0.0, "a"), trained(0.3, "b"), trained(0.3, "c")
    assert any(not torch.equal(clean[k], noisy[k]) for k in clean)
    assert all(torch.equal(noisy[k], noisy_again[k]) for k in noisy)


def test_layer_distillation_projects_unequal_widths_and_trains_the_projection(taught, tmp_path):
    ws = replace(taught, run_dir=tmp_path, _features={}, _hashes={})
    teacher_dir = str(taught.step_dir("teacher") / "model")  # tiny-bert: 2 layers, width 64
    metrics = []
    step = TrainStep("narrow", "bert-L1-H32-A2-I64", 0, "teacher", (TermSpec("hidden_mse", 1.0),),
                     TrainConfig(epochs=6, learning_rate=3e-3, batch_size=16, log_every=1),
                     layer_teacher=teacher_dir, layer_map=((0, 1),))
    execute(step, ws, callbacks_for=lambda s: [metrics.append])
    losses = [m["loss/hidden_mse"] for m in metrics]
    assert losses[-1] < 0.5 * losses[0], losses[:3] + losses[-3:]
    student = load_model("bert-L1-H32-A2-I64", 0, "teacher", ws, "cpu")
    teacher = load_model(teacher_dir, 0, "teacher", ws, "cpu")
    layers = LayerDistillation(student, teacher, ((0, 1),), ("hidden_mse",), seed=0)
    assert [tuple(p.shape) for p in layers.projections.parameters()] == [(64, 32), (64,)]
    layers.remove()
    with pytest.raises(ConfigError, match="student width 32 != teacher width 64"):
        LayerDistillation(student, teacher, ((0, 1),), ("hidden_mse",), projection=False)
    with pytest.raises(ConfigError, match="teacher layer 2 does not exist; the teacher has 2 layers"):
        LayerDistillation(student, teacher, ((0, 2),), ("attention_map",))
    # relations need no projection, whatever the widths
    relation = LayerDistillation(student, teacher, ((0, 1),), ("relation", "attention_map"), projection=False,
                                 relation_heads=2)
    assert not len(relation.projections)
    _, arrays = ws.features("teacher", "train")
    batch = {k: torch.from_numpy(v[:4]) for k, v in arrays.items()}
    relation.forward(ws.task.forward)(student.train(), batch, 0)
    for kind in ("relation", "attention_map"):
        value = relation.term(kind).fn(None, batch)
        assert value.shape == (4,) and torch.isfinite(value).all() and (value > 0).all()
    relation.term("relation").fn(None, batch).sum().backward()
    assert student.bert.encoder.layer[0].attention.self.query.weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in teacher.parameters())  # the teacher is frozen
    relation.remove()


def test_a_layer_term_without_the_teachers_tokenizer_is_refused(taught, tmp_path):
    ws = replace(taught, run_dir=tmp_path, _features={}, _hashes={})
    step = TrainStep("s", "bilstm-E16-H16", 0, "words", (TermSpec("hidden_cos"),), TrainConfig(epochs=1),
                     layer_teacher=str(taught.step_dir("teacher") / "model"), layer_map=((0, 0),))
    with pytest.raises(ConfigError, match="vocabulary"):
        execute(step, ws)


def test_uniform_layer_map_ends_on_the_last_teacher_layer():
    assert uniform_layer_map(2, 4) == ((0, 1), (1, 3))
    assert uniform_layer_map(3, 12) == ((0, 3), (1, 7), (2, 11))
    assert uniform_layer_map(2, 2) == ((0, 0), (1, 1))


def test_a_teacher_assistant_chain_collects_each_knowledge_table_once(tasks_file, tmp_path):
    torch.set_num_threads(1)
    data = StudentsData(tasks=tasks_file, vocab_size=400, word_vocab_size=300)
    settings = StudentsSettings(teacher_model="tiny-bert", teacher_epochs=1, teacher_restarts=1, assistant="bert-L1-H32-A2-I64",
                                students=("scratch", "bilstm"), scratch_layers=1, scratch_hidden=16,
                                scratch_intermediate=32, bilstm_hidden=8, layer_loss="hidden_mse", epochs=1,
                                batch_size=32, alpha=0.4, baseline=False, speed_examples=8, speed_repeats=1)
    ws = build_students_workspace(data, settings.teacher_model, tmp_path)
    ran: list[str] = []

    def runner(steps):
        ran.extend(step.name for step in steps)
        return [execute(step, ws) for step in steps]

    started: list[tuple[int, str]] = []
    recipe = students_recipe(settings, ws)

    class Recording(InTurn):
        def start(self, steps, stages):
            started.extend(zip(stages, (step.name for step in steps)))
            super().start(steps, stages)

    results = flow(recipe, Recording(runner))
    stages = [[name for stage, name in started if stage == k] for k in sorted({stage for stage, _ in started})]
    assert stages[:4] == [["teacher"], ["knowledge"], ["assistant"], ["knowledge-assistant"]]
    assert sorted(ran) == sorted(set(ran)) and ran.count("knowledge") == ran.count("knowledge-assistant") == 1
    assert not recipe(results)  # finished
    assert recipe.planned == len(stages)  # every stage it went through
    assistant = json.loads(ws.result_path("assistant").read_text())
    assert assistant["last_metrics"]["weight/kd"] == 0.4  # the assistant distils from the teacher as students do
    path = ws.resolve(results["knowledge-assistant"]["path"])
    assert read_manifest(read_knowledge(path), path).teachers[0].name == assistant["model_dir"]  # students read it
    scratch = json.loads(ws.result_path("scratch").read_text())
    assert "loss/hidden_mse" in scratch["last_metrics"] and "loss/hidden_mse" not in \
        json.loads(ws.result_path("bilstm").read_text())["last_metrics"]
    assert set(results["speed"]["models"]) == {"teacher", "assistant", "scratch", "bilstm"}
    speed = results["speed"]["models"]
    assert speed["teacher"]["speedup_b1"] == 1.0
    assert speed["scratch"]["disk_bytes"] == (tmp_path / "steps/scratch/model/model.safetensors").stat().st_size
    assert speed["scratch"]["parameters"] == scratch["parameters"] < speed["teacher"]["parameters"]


@pytest.mark.parametrize("changes, message", [
    ({"students": ("layers", "tiny")}, "need distinct kinds"),
    ({"noise": -0.1}, "noise"),
    ({"loss": "kl"}, "loss"),
    ({"scratch_hidden": 50, "scratch_heads": 4}, "scratch_hidden"),
    ({"layer_map": ("0-1",)}, "write STUDENT:TEACHER"),
])
def test_bad_student_settings_are_refused_at_construction(changes, message):
    with pytest.raises(ConfigError, match=message):
        StudentsSettings(**changes)


@pytest.mark.parametrize("changes, message", [
    ({"student_layers": (0, 4)}, "the teacher has 4"),
    ({"layer_loss": "hidden_mse", "layer_map": ("0:5",)}, "teacher layer 5 does not exist; the teacher has 4 layers"),
    ({"layer_loss": "hidden_mse", "layer_map": ("3:1",)}, "student layer 3 does not exist"),
    ({"layer_loss": "hidden_cos", "projection": False}, "needs the projection"),
])
def test_student_shapes_are_checked_against_the_teacher(changes, message):
    with pytest.raises(ConfigError, match=message):
        plan_students(StudentsSettings(teacher_model="small-bert", **changes))


def test_the_layers_student_is_copied_from_every_other_teacher_layer():
    plans = {p.kind: p for p in plan_students(StudentsSettings(teacher_model="small-bert", layer_loss="hidden_mse",
                                                               bilstm_embeddings="teacher", bilstm_hidden=64))}
    assert plans["layers"].model == "@teacher" and plans["layers"].keep_layers == (0, 2)
    assert plans["layers"].layer_map == ((0, 0), (1, 2))
    assert plans["scratch"].layer_map == ((0, 1), (1, 3)) and plans["scratch"].model == "bert-L2-H64-A2-I256"
    assert plans["bilstm"].model == "bilstm-E128-H64" and plans["bilstm"].tokenizer == "words"
    assert plans["bilstm"].embeddings_from == "@teacher"
    random = plan_students(StudentsSettings(students=("bilstm",), bilstm_embeddings="random",
                                            bilstm_embedding_dim=48, bilstm_hidden=16))[0]
    assert random.model == "bilstm-E48-H16" and random.embeddings_from is None
    default = plan_students(StudentsSettings(teacher_model="small-bert", students=("bilstm",)))[0]  # chosen on dev
    assert default.model == "bilstm-E128-H64" and default.embeddings_from == "@teacher"



def test_layer_terms_work_for_a_span_qa_student_too(tmp_path):
    from kd_core.engine.prepare import DataOptions, build_workspace

    torch.set_num_threads(1)
    ws = build_workspace(DataOptions(task="span_qa", synthetic_size=30, vocab_size=300), "tiny-bert", "tiny-bert",
                         tmp_path)
    execute(TrainStep("teacher", "tiny-bert", 0, "teacher", (TermSpec("hard"),), TrainConfig(epochs=1)), ws)
    metrics = []
    step = TrainStep("student", "tiny-bert-1l", 1, "teacher", (TermSpec("hard"), TermSpec("attention_map", 5.0)),
                     TrainConfig(epochs=2, log_every=1), layer_teacher="@teacher", layer_map=((0, 1),))
    result = execute(step, ws, callbacks_for=lambda s: [metrics.append])
    assert result["last_metrics"]["weight/attention_map"] == 5.0
    assert metrics[-1]["loss/attention_map"] < metrics[0]["loss/attention_map"]


def test_the_teacher_and_the_layers_student_share_their_own_learning_rate():
    from types import SimpleNamespace

    settings = StudentsSettings(teacher_model="small-bert", learning_rate=1e-3, teacher_learning_rate=5e-5)
    planned = []

    def plan(steps):
        planned.extend(steps)
        return [{} for _ in steps]

    drive(students_recipe(settings, SimpleNamespace(splits={"train": None})), plan)
    rates = {step.name: step.config.learning_rate for step in planned if isinstance(step, TrainStep)}
    assert rates == {"teacher-0": 5e-5, "teacher-1": 5e-5, "teacher-2": 5e-5, "layers": 5e-5, "layers-no-kd": 5e-5,
                     "scratch": 1e-3, "scratch-no-kd": 1e-3, "bilstm": 1e-3, "bilstm-no-kd": 1e-3}
    assert [s.name for s in planned if not isinstance(s, TrainStep)][:2] == ["teacher", "knowledge"]  # select, collect
