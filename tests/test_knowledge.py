"""Knowledge tables: the ensemble merge against hand-built member outputs, alignment, Arrow IPC read in place."""

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import kd_core.knowledge.table as table_module
from kd_core.data.batches import batch_at
from kd_core.io.errors import ConfigError, DataError
from kd_core.io.file_checks import CorruptFile
from kd_core.knowledge.span import knowledge_arrays, knowledge_metadata, member_table, merge_knowledge
from kd_core.knowledge.table import Rows, read_knowledge, write_knowledge
from kd_core.objectives.losses import teacher_probabilities

CONTEXT = "alpha beta gamma delta"
OFFSETS = [[-1, -1], [0, 5], [6, 10], [11, 16], [17, 22]]
SPAN_MASK = np.array([[True, True, True, True, True]] * 3)

# Two members, three features over the same context, S = 5 (0 is [CLS]), K = 2, Q = 2.
M1_START = np.array([[0, 2, 0, 1, 0]] * 3, np.float32)
M1_END = np.array([[0, 2, 0, 1, 0]] * 3, np.float32)
M2_START = np.array([[0, 0, 0, 3, 0]] * 3, np.float32)
M2_END = np.array([[0, 0, 1, 3, 0]] * 3, np.float32)
M1_TOP = (np.array([[1, 3]] * 3), np.array([[1, 3]] * 3))  # "alpha", "gamma"
M2_TOP = (np.array([[3, 1]] * 3), np.array([[3, 2]] * 3))  # "gamma", "alpha beta"
REFERENCES = [["gamma"], ["gamma delta", "alpha beta gamma"], []]


def _members():
    ids = ["f0", "f1", "f2"]
    att1 = np.full((3, 5, 2), 0.2, np.float32)
    att2 = np.full((3, 5, 2), 0.4, np.float32)
    m1 = member_table(ids, M1_START, M1_END, *M1_TOP, np.full((3, 2), -1.0), att1)
    m2 = member_table(ids, M2_START, M2_END, *M2_TOP, np.full((3, 2), -2.0), att2)
    return m1, m2


def _merge(confusing="window"):
    return merge_knowledge(list(_members()), {"span_mask": SPAN_MASK}, ["e0", "e1", "e2"], [CONTEXT] * 3,
                           [OFFSETS] * 3, REFERENCES, confusing)


def test_window_rule_picks_the_span_of_highest_ensemble_confidence_in_each_window():
    # Candidates for gold "gamma": alpha (1,1) and "alpha beta" (1,2) have zero F1.
    # Averaged end probabilities (tau = 1): member 1 softmax([0,2,0,1,0]) = [.0763, .5637, .0763, .2074, .0763],
    # member 2 softmax([0,0,1,3,0]) = [.0388, .0388, .1053, .7784, .0388] -> q_end[1] = .3012, q_end[2] = .0908;
    # the start factor q_start[1] is shared, so (1, 1) "alpha" wins.
    merged = _merge()
    arrays = knowledge_arrays(merged, ["f0", "f1", "f2"])
    assert (arrays["confusing_start"][0], arrays["confusing_end"][0]) == (1, 1)
    # f1: "alpha" overlaps "alpha beta gamma", "gamma" overlaps both -> no confusing answer
    assert arrays["confusing_start"][1] == -1
    # f2: no gold answer -> none
    assert arrays["confusing_start"][2] == -1


def test_merge_keeps_member_logits_so_probabilities_average():
    arrays = knowledge_arrays(_merge(), ["f0", "f1", "f2"])
    assert arrays["teacher_start_logits"].shape == (3, 2, 5)
    q = teacher_probabilities(torch.from_numpy(np.asarray(arrays["teacher_end_logits"], np.float32)),
                              torch.from_numpy(SPAN_MASK))
    expected = (torch.softmax(torch.tensor(M1_END[0]), 0) + torch.softmax(torch.tensor(M2_END[0]), 0)) / 2
    assert torch.allclose(q[0], expected, atol=1e-6)
    assert q[0, 1].item() == pytest.approx(0.3012, abs=1e-4)


def test_merge_averages_attention_and_records_metadata(tmp_path):
    merged = _merge()
    meta = knowledge_metadata(merged)
    assert meta == {"kind": "ensemble", "members": 2, "seq_len": 5, "top_k": 2, "num_question_tokens": 2,
                    "confusing": "window"}
    assert merged.column("topk_start").type.list_size == 4  # both members' top-K side by side
    path = write_knowledge(merged, tmp_path / "k.arrow")
    arrays = knowledge_arrays(read_knowledge(path), ["f2", "f0"])  # any order of features
    assert arrays["teacher_attention"].shape == (2, 5, 2)
    assert np.allclose(arrays["teacher_attention"], 0.3, atol=1e-3)
    assert arrays["teacher_start_logits"][0, 1].tolist() == M2_START[2].tolist()


def test_mismatched_members_and_missing_features_are_refused():
    m1, m2 = _members()
    with pytest.raises(DataError, match="different features"):
        merge_knowledge([m1, m2.slice(0, 2)], {"span_mask": SPAN_MASK}, ["e0", "e1", "e2"], [CONTEXT] * 3,
                        [OFFSETS] * 3, REFERENCES)
    with pytest.raises(ConfigError, match="confusing"):
        _merge("ensemble")
    with pytest.raises(DataError, match="no knowledge"):
        knowledge_arrays(_merge(), ["f0", "nope"])
    with pytest.raises(DataError, match="merge_knowledge first"):
        knowledge_arrays(m1, ["f0"])


# Two windows of one question over "alpha beta gamma delta epsilon" (gold "delta") and one
# unanswerable question; S = 4, K = 2, scores are each member's own log p_start + log p_end.
LONG = "alpha beta gamma delta epsilon"
W0 = [[-1, -1], [0, 5], [6, 10], [11, 16]]  # alpha beta gamma
W1 = [[-1, -1], [11, 16], [17, 22], [23, 30]]  # gamma delta epsilon


def _question_merge(confusing):
    ids, zeros = ["w0", "w1", "x0"], np.zeros((3, 4), np.float32)
    # member 1: w0 "alpha" -1.0, "gamma" -2.0; w1 "delta" (gold) -0.5, "gamma" -1.5; x0 "alpha" -0.1
    m1 = member_table(ids, zeros, zeros, np.array([[1, 3], [2, 1], [1, 2]]), np.array([[1, 3], [2, 1], [1, 2]]),
                      np.array([[-1.0, -2.0], [-0.5, -1.5], [-0.1, -0.2]]))
    # member 2: w0 "beta" -0.8, "alpha beta" -3.0; w1 "epsilon" -0.9, "delta epsilon" -1.0 (overlaps); x0 as member 1
    m2 = member_table(ids, zeros, zeros, np.array([[2, 1], [3, 2], [1, 2]]), np.array([[2, 2], [3, 3], [1, 2]]),
                      np.array([[-0.8, -3.0], [-0.9, -1.0], [-0.1, -0.2]]))
    mask = np.ones((3, 4), bool)
    merged = merge_knowledge([m1, m2], {"span_mask": mask}, ["q", "q", "x"], [LONG] * 3, [W0, W1, W0],
                             [["delta"], ["delta"], []], confusing)
    arrays = knowledge_arrays(merged, ids)
    return arrays["confusing_start"].tolist(), arrays["confusing_end"].tolist()


def test_question_rule_picks_one_wrong_answer_per_question_by_the_members_own_scores():
    # Wrong candidates of question q: alpha -1.0, gamma -2.0 / -1.5, beta -0.8, "alpha beta" -3.0,
    # epsilon -0.9 -> "beta" (member 2, window w0). w0 holds it at token 2; w1 does not -> -1.
    # x has no gold answer -> -1.
    assert _question_merge("question") == ([2, -1, -1], [2, -1, -1])
    # The window rule gives w1 a confusing answer of its own (gamma or epsilon).
    starts, _ = _question_merge("window")
    assert starts[0] >= 0 and starts[1] in (1, 3) and starts[2] == -1


def test_a_stored_table_is_read_in_place_as_float16_and_batches_become_float32(tmp_path):
    path = write_knowledge(_merge(), tmp_path / "k.arrow")
    allocated = pa.total_allocated_bytes()
    table = read_knowledge(path)
    in_order = knowledge_arrays(table, ["f0", "f1", "f2"])
    reordered = knowledge_arrays(table, ["f2", "f0"])
    # Nothing is copied: the table's columns are the mapped file and the arrays are views of them.
    assert pa.total_allocated_bytes() - allocated < 1024
    attention = in_order["teacher_attention"]
    assert isinstance(attention, np.ndarray) and attention.dtype == np.float16 and not attention.flags.owndata
    assert not attention.flags.writeable  # a read-only view of the file
    assert isinstance(reordered["teacher_start_logits"], Rows)
    # A batch of the reordered rows holds the right rows, in float32.
    batch = batch_at(reordered, np.array([1, 0]))
    assert batch["teacher_start_logits"].dtype == torch.float32
    assert batch["teacher_start_logits"][0, 1].tolist() == M2_START[0].tolist()  # row 1 of ["f2", "f0"] is f0
    assert batch["teacher_attention"].dtype == torch.float32 and batch["teacher_attention"].shape == (2, 5, 2)
    assert batch["confusing_start"].tolist() == in_order["confusing_start"][[0, 2]].tolist()


def test_rows_of_indexes_like_the_array_it_stands_for():
    base = np.arange(24, dtype=np.float16).reshape(4, 3, 2)
    rows = np.array([3, 1, 1])
    picked, whole = Rows([base[:1], base[1:3], base[3:]], rows), base[rows]  # three chunks
    assert len(picked) == 3 and picked.shape == whole.shape and picked.dtype == whole.dtype and picked.ndim == 3
    for key in (np.array([2, 0]), slice(1, None), 0, (1, 2), (np.array([0, 2]), 1), (slice(None), 0, 1)):
        np.testing.assert_array_equal(picked[key], whole[key])
    np.testing.assert_array_equal(np.asarray(picked, np.float32), whole.astype(np.float32))


def test_a_parquet_table_of_an_older_version_is_named_as_such(tmp_path):
    pq.write_table(_merge(), tmp_path / "old.parquet")
    with pytest.raises(CorruptFile, match="old.parquet: corrupt: a Parquet table of an older version"):
        read_knowledge(tmp_path / "old.parquet")


def test_a_table_of_several_record_batches_is_read_in_place_across_them(tmp_path, monkeypatch):
    """Arrow IPC lengths are 32-bit: a column over 2^31 values (88k features of 384 x 64 attention) is written in
    several record batches. Forced here with a tiny limit: 10 values per batch = 1 row of attention (S * Q = 10)."""
    merged = _merge()
    monkeypatch.setattr(table_module, "MAX_BATCH_VALUES", 10)
    path = write_knowledge(merged, tmp_path / "k.arrow")
    table = read_knowledge(path)
    assert table.column("attention").num_chunks == 3
    arrays = knowledge_arrays(table, ["f0", "f1", "f2"])
    assert isinstance(arrays["teacher_attention"], Rows)
    whole = knowledge_arrays(merged, ["f0", "f1", "f2"])
    batch = batch_at(arrays, np.array([2, 0, 1]))
    np.testing.assert_array_equal(batch["teacher_attention"].numpy(),
                                  np.asarray(whole["teacher_attention"], np.float32)[[2, 0, 1]])
    np.testing.assert_array_equal(batch["teacher_start_logits"].numpy(),
                                  np.asarray(whole["teacher_start_logits"], np.float32)[[2, 0, 1]])
