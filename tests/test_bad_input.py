"""Every kind of bad input, one row each (the "Bad input" table of docs/data.md): one line naming the source and the
problem, exit status 2, before any cluster work (no MLflow store, no run directory)."""

import json
from pathlib import Path

import pytest

import jobs.evaluate
import jobs.imm
import jobs.kd
import jobs.mtdnn
import jobs.sweep
from cluster.job import JobState
from kd_core.io.cli import run_cli

CONTEXT = "Lyon Rovers won the super cup in 2003 after a long final."


def squad(qas: list[dict]) -> str:
    return json.dumps({"version": "1.1", "data": [{"title": "t", "paragraphs": [{"context": CONTEXT, "qas": qas}]}]})


QUESTION = {"id": "q1", "question": "When did they win?", "answers": [{"text": "2003", "answer_start": 33}]}
TSV_TASK = ("tasks:\n  - {name: sst, kind: classification, labels: [negative, positive], train: sst.tsv, "
            "dev: sst_dev.tsv, columns: {text_a: sentence, label: label}}\n")
GOOD_TSV = "sentence\tlabel\na fine film\tpositive\na dull film\tnegative\n"
STS_TASK = ("tasks:\n  - {name: sts, kind: regression, pair: true, score_range: [0, 5], train: sts.tsv, dev: sts_dev.tsv, "
            "columns: {text_a: a, text_b: b, score: score}}\n")
GOOD_STS = "a\tb\tscore\na cat\ta cat\t5.0\na cat\ta dog\t1.5\n"
#: A safetensors file of one 16-byte tensor cut after 8 of its bytes (ASCII, so written as text byte for byte).
_HEADER = '{"w":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}'
CUT_SAFETENSORS = chr(len(_HEADER)) + "\0" * 7 + _HEADER + "\0" * 8
#: 256 bytes of a fixed pseudo-random sequence instead of weights.
RANDOM_SAFETENSORS = "".join(chr((i * 2654435761 >> 7) % 256) for i in range(256))

#: (row id, job, arguments, files to write {name: text}, what the one error line contains)
ROWS = [
    ("squad-malformed-json", jobs.kd, ["--task", "span_qa", "--train", "train.json"], {"train.json": "{ not json"},
     "train.json: line 1, column 3: malformed JSON"),
    ("squad-no-data", jobs.kd, ["--task", "span_qa", "--train", "train.json"], {"train.json": '{"version": "1.1"}'},
     'train.json: top level: missing field "data"'),
    ("squad-offset-outside-context", jobs.kd, ["--task", "span_qa", "--train", "train.json"],
     {"train.json": squad([{**QUESTION, "answers": [{"text": "2003", "answer_start": 900}]}])},
     'train.json: question id "q1" at data[0].paragraphs[0].qas[0].answers[0]: answer_start 900 is outside'),
    ("squad-empty-question", jobs.kd, ["--task", "span_qa", "--train", "train.json"],
     {"train.json": squad([{**QUESTION, "question": " "}])}, 'field "question" is empty'),
    ("mrqa-jsonl-bad-line", jobs.kd, ["--task", "span_qa", "--train", "train.jsonl"],
     {"train.jsonl": '{"header": {"dataset": "x"}}\n{"context": "abc", "qas": [ broken\n'},
     "train.jsonl: line 2, column 29: malformed JSON"),
    ("data-file-missing", jobs.kd, ["--task", "span_qa", "--train", "missing.json"], {}, "missing.json: file: no such"),
    ("tsv-label-outside-the-label-set", jobs.mtdnn, ["--tasks", "tasks.yaml"],
     {"tasks.yaml": TSV_TASK, "sst.tsv": "sentence\tlabel\na fine film\tpositive\na dull film\tmeh\n",
      "sst_dev.tsv": GOOD_TSV}, "sst.tsv: line 3: label 'meh' is not in the label set"),
    ("task-definition-unknown-kind", jobs.mtdnn, ["--tasks", "tasks.yaml"],
     {"tasks.yaml": "tasks:\n  - {name: a, synthetic: sentiment, kind: ranking, size: 20}\n"},
     "tasks.yaml: task 'a': unknown kind 'ranking'"),
    ("task-definition-duplicate", jobs.mtdnn, ["--tasks", "tasks.yaml"],
     {"tasks.yaml": "tasks:\n  - {name: a, synthetic: sentiment, kind: classification, labels: [negative, positive], "
                    "size: 20}\n  - {name: a, synthetic: rating, kind: regression, size: 20}\n"},
     "tasks.yaml: task 'a': is listed twice"),
    ("config-unknown-option", jobs.kd, ["--config", "kd.yaml"], {"kd.yaml": "taus: 2\n"},
     "kd.yaml: taus: unknown option; known: accumulate_steps, alpha"),
    ("config-renamed-option", jobs.kd, ["--config", "kd.yaml"], {"kd.yaml": "teachers: 2\n"},
     "kd.yaml: teachers: is now `members`"),
    ("option-renamed", jobs.mtdnn, ["--no-vanilla"], {}, "options: --no-vanilla: is now --no-baseline"),
    ("sweep-job-option-unknown", jobs.sweep, ["--method", "kd", "--gamma", "1"], {},
     "sweep: --gamma: not an option of the sweep, nor a setting or data option of the kd job"),
    ("config-yaml-syntax", jobs.kd, ["--config", "kd.yaml"], {"kd.yaml": "tau: [2\n"}, "kd.yaml: syntax:"),
    ("config-wrong-type", jobs.kd, ["--config", "kd.yaml"], {"kd.yaml": "tau: hot\n"},
     "kd.yaml: --tau: expected a number, got 'hot'"),
    ("config-file-missing", jobs.kd, ["--config", "nowhere.yaml"], {}, "nowhere.yaml: file: cannot read"),
    ("option-out-of-range", jobs.kd, ["--tau", "0"], {}, "kd: --tau: must be > 0, got 0.0"),
    ("option-bad-registered-name", jobs.kd, ["--register-as", "a/b"], {}, "job: --register-as: a registered model"),
    ("option-file-tracking-store", jobs.kd, ["--tracking-uri", "file:///tmp/x"], {},
     "job: --tracking-uri: file stores are refused"),
    ("option-bad-domain", jobs.imm, ["--domain", "wiki"], {}, "NAME=TRAIN"),
    ("model-path-missing", jobs.kd, ["--teacher-model", "/nonexistent/model"], {},
     "/nonexistent/model: path: no such model directory"),
    ("model-not-on-the-hub-offline", jobs.kd, ["--teacher-model", "no-such-org/no-such-model"], {},
     "no-such-org/no-such-model: from_pretrained: cannot load"),
    ("model-folder-without-config", jobs.kd, ["--teacher-model", "empty"], {"empty/.keep": ""},
     "empty: config.json: directory has no config.json"),
    ("model-weights-cut-short", jobs.kd, ["--teacher-model", "cut"],
     {"cut/config.json": {"model_type": "bert"}, "cut/model.safetensors": CUT_SAFETENSORS},
     "cut/model.safetensors: corrupt: the file has 71 bytes, its header describes 79 (cut short)"),
    ("model-weights-random", jobs.kd, ["--teacher-model", "noise"],
     {"noise/config.json": {"model_type": "bert"}, "noise/model.safetensors": RANDOM_SAFETENSORS},
     "noise/model.safetensors: corrupt: its header length says"),
    ("resume-run-of-another-job", jobs.imm, ["--resume", "run"], {"run/state.json": JobState("kd", {}).__dict__},
     "the run directory holds a kd job, not imm"),
    ("resume-run-of-another-version", jobs.kd, ["--resume", "run"],
     {"run/state.json": {**JobState("kd", {}).__dict__, "version": 0}}, "written by state version 0"),
    ("resume-without-state", jobs.kd, ["--resume", "nowhere"], {}, "state.json is missing"),
    ("run-directory-unwritable", jobs.kd, ["--run-dir", "a-file/run"], {"a-file": "not a folder"},
     "a-file/run: run directory: cannot write: Not a directory"),
    ("run-directory-bad-uri", jobs.kd, ["--run-dir", "s3://bucket/run?colour=blue"], {},
     "s3://bucket/run?colour=blue: run directory: not a file system URI pyarrow can open"),
    ("sweep-knowledge-from-uri", jobs.sweep, ["--method", "kd", "--knowledge-from", "s3://bucket/run"], {},
     "sweep: --knowledge-from: reused teachers are read from a local or shared-file-system path"),
    ("ray-address-nothing-listening", jobs.kd, ["--address", "127.0.0.1:1"], {},
     "127.0.0.1:1: --address: no Ray cluster answers there (Connection refused"),
    ("option-nan", jobs.kd, ["--alpha", "nan"], {}, "options: --alpha: must be a finite number, got nan"),
    ("option-infinite", jobs.imm, ["--epochs", "inf"], {}, "options: --epochs: must be a finite number, got inf"),
    ("config-infinite", jobs.kd, ["--config", "kd.yaml"], {"kd.yaml": "learning_rate: .inf\n"},
     "kd.yaml: --learning-rate: must be a finite number, got inf"),
    ("sweep-setting-nan", jobs.sweep, ["--method", "kd", "--set", "tau=.nan"], {},
     "sweep.job: tau: must be a finite number, got nan"),
    ("sweep-space-nan", jobs.sweep, ["--method", "kd", "--config", "sweep.yaml"],
     {"sweep.yaml": "space:\n  tau: {choice: [1, .nan]}\n"}, "sweep: space.tau: values must be finite numbers, got nan"),
    ("option-empty-experiment", jobs.kd, ["--experiment", ""], {}, "job: --experiment: must not be empty"),
    ("config-duplicate-key", jobs.kd, ["--config", "kd.yaml"], {"kd.yaml": "tau: 2\nalpha: 0.5\ntau: 4\n"},
     "kd.yaml: line 3: key 'tau' is given twice"),
    ("task-definition-duplicate-key", jobs.mtdnn, ["--tasks", "tasks.yaml"],
     {"tasks.yaml": "tasks:\n  - name: a\n    name: b\n    synthetic: sentiment\n    kind: classification\n"},
     "tasks.yaml: line 3: key 'name' is given twice"),
    ("task-definition-wrong-type", jobs.mtdnn, ["--tasks", "tasks.yaml"],
     {"tasks.yaml": "tasks:\n  - {name: a, synthetic: sentiment, kind: classification, size: many}\n"},
     "tasks.yaml: task 'a': size: expected an integer, got 'many'"),
    ("task-definition-labels-not-a-list", jobs.mtdnn, ["--tasks", "tasks.yaml"],
     {"tasks.yaml": TSV_TASK.replace("[negative, positive]", "np"), "sst.tsv": GOOD_TSV, "sst_dev.tsv": GOOD_TSV},
     "tasks.yaml: task 'sst': labels: expected a list of names"),
    ("tsv-not-utf8", jobs.mtdnn, ["--tasks", "tasks.yaml"],
     {"tasks.yaml": TSV_TASK, "sst.tsv": GOOD_TSV.encode() + b"caf\xe9 society\tpositive\n", "sst_dev.tsv": GOOD_TSV},
     "sst.tsv: line 4: byte 0xe9 is not UTF-8"),
    ("tsv-extra-field", jobs.mtdnn, ["--tasks", "tasks.yaml"],
     {"tasks.yaml": TSV_TASK, "sst.tsv": GOOD_TSV + "a good\tfilm\tpositive\n", "sst_dev.tsv": GOOD_TSV},
     "sst.tsv: line 4: has 3 tab-separated fields, the header has 2"),
    ("sts-score-not-finite", jobs.mtdnn, ["--tasks", "tasks.yaml"],
     {"tasks.yaml": STS_TASK, "sts.tsv": GOOD_STS + "two cats\tno cat\tnan\n", "sts_dev.tsv": GOOD_STS},
     "sts.tsv: line 4: score 'nan' is not a finite number"),
    ("sts-score-outside-its-range", jobs.mtdnn, ["--tasks", "tasks.yaml"],
     {"tasks.yaml": STS_TASK, "sts.tsv": GOOD_STS + "two cats\tno cat\t1e9\n", "sts_dev.tsv": GOOD_STS},
     "sts.tsv: line 4: score 1e+09 is outside the task's score_range [0, 5]"),
    ("domain-name-unsafe", jobs.imm, ["--domain", "a/..=a.json", "--domain", "b=b.json"], {},
     "domains: a/..=a.json: 'a/..' is not a usable name"),
    ("squad-impossible-with-answer", jobs.kd, ["--task", "span_qa", "--train", "train.json"],
     {"train.json": squad([{**QUESTION, "is_impossible": True}])},
     'question id "q1" at data[0].paragraphs[0].qas[0]: is_impossible is true but it has 1 answers'),
    ("evaluate-no-id-matches", jobs.evaluate, ["data.json", "pred.json"],
     {"data.json": squad([QUESTION]), "pred.json": {"zz": "2003"}},
     "pred.json: ids: none of its 1 ids is a question id of data.json"),
]
#: --check writes nothing: these rows run the command (stopped before Ray); jobs/evaluate.py has no --check.
NOT_CHECK = {"run-directory-unwritable", "ray-address-nothing-listening", "evaluate-no-id-matches"}  # --check writes nothing: these rows run the job (stopped before Ray)


@pytest.mark.parametrize("row, job, args, files, expected", ROWS, ids=[row[0] for row in ROWS])
def test_bad_input_is_one_line_and_exit_2_before_cluster_work(row, job, args, files, expected, tmp_path, monkeypatch,
                                                              capsys):
    monkeypatch.chdir(tmp_path)
    for name, content in files.items():
        path = Path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content if isinstance(content, str) else json.dumps(content))
    assert run_cli(job.main, [*args] if row in NOT_CHECK else [*args, "--check"]) == 2
    errors = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("error: ") and expected in errors[0], errors
    assert not Path("mlflow.db").exists() and not Path("runs").exists()
