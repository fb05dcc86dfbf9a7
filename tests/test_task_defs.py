"""Task definitions as data: the YAML file, the GLUE TSV and hf: readers, the per-task splits."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from kd_core.engine.prepare import MultiTaskData, build_multitask_workspace
from kd_core.io.errors import ConfigError, DataError
from kd_core.tasks.definitions import TASKS_DIR, TaskDef, load_task_defs, read_task_file


def test_shipped_glue_definitions_name_the_papers_metrics():
    defs = {d.name: d for d in load_task_defs(TASKS_DIR / "glue.yaml")}
    assert list(defs) == ["cola", "sst2", "mrpc", "stsb", "rte", "qnli"]
    assert defs["cola"].metrics == ("mcc", "accuracy") and defs["mrpc"].metrics == ("accuracy", "f1")
    assert defs["stsb"].kind == "regression" and defs["stsb"].metrics == ("pearson", "spearman")
    assert defs["rte"].task().primary_metric == "accuracy" and defs["rte"].pair
    assert [d.name for d in load_task_defs(TASKS_DIR / "glue.yaml", only=["rte", "cola"])] == ["cola", "rte"]


def test_glue_tsv_with_and_without_header_bom_and_quotes(tmp_path: Path):
    # MRPC's file starts with a UTF-8 BOM; CoLA's has no header; GLUE text holds bare quotes
    (tmp_path / "mrpc.tsv").write_text("\ufeffQuality\t#1 ID\t#2 ID\t#1 String\t#2 String\n"
                                       '1\t1\t2\tHe said " yes " .\tHe agreed .\n0\t3\t4\tA cat .\tA dog .\n',
                                       encoding="utf-8")
    mrpc = TaskDef("mrpc", "classification", pair=True, labels=("0", "1"), train="mrpc.tsv", dev="mrpc.tsv",
                   columns={"text_a": "#1 String", "text_b": "#2 String", "label": "Quality"})
    rows = read_task_file(mrpc, "mrpc.tsv", tmp_path, "train")
    assert rows["text_a"] == ['He said " yes " .', "A cat ."] and rows["label"] == [1, 0]
    assert rows["id"] == ["mrpc-train-2", "mrpc-train-3"] and rows["task"] == ["mrpc", "mrpc"]
    (tmp_path / "cola.tsv").write_text("gj04\t1\t\tGood sentence .\ngj04\t0\t*\tSentence bad the .\n")
    cola = TaskDef("cola", "classification", labels=("0", "1"), train="cola.tsv", dev="cola.tsv", header=False,
                   columns={"text_a": 3, "label": 1})
    assert read_task_file(cola, "cola.tsv", tmp_path, "test")["label"] == [1, 0]
    (tmp_path / "sts.tsv").write_text("sentence1\tsentence2\tscore\nA man .\tA person .\t3.8\nX .\tY .\tfive\n")
    sts = TaskDef("stsb", "regression", pair=True, train="sts.tsv", dev="sts.tsv",
                  columns={"text_a": "sentence1", "text_b": "sentence2", "score": "score"})
    with pytest.raises(DataError, match=r"sts.tsv: line 3: score 'five' is not a number"):
        read_task_file(sts, "sts.tsv", tmp_path, "train")
    with pytest.raises(DataError, match=r"header: no column 'label'"):
        read_task_file(TaskDef("x", "classification", labels=("0", "1"), train="sts.tsv", dev="sts.tsv",
                               columns={"text_a": "sentence1", "label": "label"}), "sts.tsv", tmp_path, "train")


def test_hf_source_reads_a_local_dataset_folder_and_maps_label_indices(tmp_path: Path):
    folder = tmp_path / "ds"
    folder.mkdir()
    for split, rows in (("train", 3), ("validation", 2)):
        pq.write_table(pa.table({"sentence": [f"text {i}" for i in range(rows)], "label": [i % 2 for i in range(rows)]}),
                       folder / f"{split}.parquet")
    sst = TaskDef("sst", "classification", labels=("neg", "pos"), train=f"hf:{folder}", dev=f"hf:{folder}",
                  columns={"text_a": "sentence", "label": "label"})
    train = read_task_file(sst, f"hf:{folder}", tmp_path, "train")
    assert train["text_a"] == ["text 0", "text 1", "text 2"] and train["label"] == [0, 1, 0]
    assert len(read_task_file(sst, f"hf:{folder}", tmp_path, "dev")) == 2
    with pytest.raises(DataError, match="cannot load"):
        read_task_file(sst, f"hf:{tmp_path}/missing", tmp_path, "train")


@pytest.mark.parametrize("entry, message", [
    ({"name": "a", "kind": "ranking"}, "unknown kind 'ranking'"),
    ({"name": "a b", "kind": "regression", "synthetic": "rating"}, "name must start with a letter"),
    ({"name": "a", "kind": "classification", "labels": ["x"], "synthetic": "sentiment"}, ">= 2 distinct labels"),
    ({"name": "a", "kind": "regression", "labels": ["x", "y"], "synthetic": "rating"}, "has no labels"),
    ({"name": "a", "kind": "regression", "synthetic": "sentiment"}, "synthetic sentiment is classification"),
    ({"name": "a", "kind": "regression", "train": "t.tsv"}, "needs a train file and a dev"),
    ({"name": "a", "kind": "regression", "train": "t.tsv", "dev": "d.tsv", "columns": {"text_a": 0}},
     "columns: missing score"),
])
def test_bad_definitions_are_refused(entry, message):
    with pytest.raises(ConfigError, match=message):
        TaskDef(**entry)


def test_definitions_file_problems_name_the_file(tmp_path: Path):
    path = tmp_path / "t.yaml"
    path.write_text("tasks: []\n")
    with pytest.raises(ConfigError, match="t.yaml: tasks: needs a non-empty list"):
        load_task_defs(path)
    path.write_text("tasks:\n  - {name: a, kind: regression, synthetic: rating, colour: red}\n")
    with pytest.raises(ConfigError, match="unknown key 'colour'"):
        load_task_defs(path)
    path.write_text("tasks: [\n")
    with pytest.raises(ConfigError, match="cannot parse"):
        load_task_defs(path)


def test_splits_hold_out_the_dev_file_as_test_and_carve_dev_from_train(tmp_path: Path):
    lines = "".join(f"sentence number {i} .\t{i % 2}\n" for i in range(40))
    (tmp_path / "train.tsv").write_text("sentence\tlabel\n" + lines)
    (tmp_path / "dev.tsv").write_text("sentence\tlabel\n" + "".join(f"held out {i} .\t{i % 2}\n" for i in range(12)))
    (tmp_path / "tasks.yaml").write_text("tasks:\n  - {name: s, kind: classification, labels: ['0', '1'], "
                                         "train: train.tsv, dev: dev.tsv, columns: {text_a: sentence, label: label}}\n"
                                         "  - {name: r, kind: regression, synthetic: rating, size: 40, "
                                         "teacher: false}\n")
    ws = build_multitask_workspace(MultiTaskData(tasks=str(tmp_path / "tasks.yaml"), max_train_examples=20,
                                                 vocab_size=200), "tiny-bert", "tiny-bert", tmp_path / "run")
    assert len(ws.examples("s.test")) == 12 and all(t.startswith("held out") for t in ws.examples("s.test")["text_a"])
    assert len(ws.examples("s.train")) == 20  # a sample of what dev left
    assert not set(ws.examples("s.dev")["id"]) & set(ws.examples("s.train")["id"])
    assert len(ws.examples("train")) == len(ws.examples("s.train")) + len(ws.examples("r.train"))
    assert ws.task.with_teacher == ("s",)
    assert ws.view("r").task.kind == "regression" and len(ws.view("r").examples("test")) >= 2
