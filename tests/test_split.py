"""Tests of kd_core.data.split: the train/dev split by context."""

from __future__ import annotations

import pytest
from datasets import Dataset

from kd_core.data.schema import examples_to_dataset
from kd_core.data.split import carve_by_context, split_by_context
from kd_core.io.errors import ConfigError, DataError


def make_dataset(n_contexts: int, per_context: int = 3, domain: str = "wiki") -> Dataset:
    """``n_contexts`` contexts with ``per_context`` questions each, rows grouped by context."""
    rows = []
    for c in range(n_contexts):
        context = f"Paragraph {c} says that item {c} costs {c} coins."
        for q in range(per_context):
            rows.append({
                "id": f"{domain}-{c}-{q}", "domain": domain, "title": "", "context": context,
                "question": f"What does item {c} cost ({q})?",
                "answers": {"text": [f"{c} coins"], "answer_start": [context.index(f"{c} coins")]},
                "is_impossible": False,
            })
    return examples_to_dataset(rows)


def test_contexts_never_straddle_the_split() -> None:
    ds = make_dataset(30)
    train, dev = split_by_context(ds, 0.2, seed=13)
    assert len(train) + len(dev) == len(ds)
    assert set(train["id"]).isdisjoint(dev["id"])
    assert set(train["context"]).isdisjoint(dev["context"])
    assert len(set(dev["context"])) == 6
    assert all(dev["context"].count(c) == 3 for c in set(dev["context"]))


def test_split_is_deterministic_and_independent_of_row_order() -> None:
    ds = make_dataset(40)
    train, dev = split_by_context(ds, 0.25, seed=7)
    again_train, again_dev = split_by_context(ds.shuffle(seed=123), 0.25, seed=7)
    assert set(dev["id"]) == set(again_dev["id"])
    assert set(train["id"]) == set(again_train["id"])
    other_dev = split_by_context(ds, 0.25, seed=8)[1]
    assert set(other_dev["id"]) != set(dev["id"])


def test_rows_keep_their_order_on_each_side() -> None:
    ds = make_dataset(10)
    train, dev = split_by_context(ds, 0.3, seed=0)
    order = {qid: i for i, qid in enumerate(ds["id"])}
    assert [order[i] for i in train["id"]] == sorted(order[i] for i in train["id"])
    assert [order[i] for i in dev["id"]] == sorted(order[i] for i in dev["id"])


@pytest.mark.parametrize("fraction", [0.001, 0.999])
def test_both_sides_are_non_empty_with_two_contexts(fraction: float) -> None:
    train, dev = split_by_context(make_dataset(2), fraction, seed=1)
    assert len(set(train["context"])) == 1 and len(set(dev["context"])) == 1


def test_same_text_in_two_domains_is_two_groups() -> None:
    ds = examples_to_dataset([*make_dataset(1, domain="a"), *make_dataset(1, domain="b")])
    train, dev = split_by_context(ds, 0.5, seed=3)
    assert {len(set(train["domain"])), len(set(dev["domain"]))} == {1}
    assert set(train["domain"]) != set(dev["domain"])


@pytest.mark.parametrize("fraction", [0, 0.0, 1, 1.0, -0.2, 1.5, float("nan"), float("inf"), True, "0.2", None])
def test_bad_dev_fraction_is_a_config_error(fraction: object) -> None:
    with pytest.raises(ConfigError, match=r"^split: dev_fraction: must be"):
        split_by_context(make_dataset(4), fraction, seed=0)  # type: ignore[arg-type]


def test_bad_seed_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match=r"^split: seed: must be an integer"):
        split_by_context(make_dataset(4), 0.5, seed="1")  # type: ignore[arg-type]


def test_a_single_context_cannot_be_split() -> None:
    with pytest.raises(DataError, match="need at least 2 distinct contexts"):
        split_by_context(make_dataset(1, per_context=5), 0.5, seed=0)



def test_carve_by_context_takes_whole_contexts_up_to_the_count_and_leaves_some() -> None:
    ds = make_dataset(4)  # 4 contexts of 3 questions
    rest, carved = carve_by_context(ds, 7, seed=0)
    assert len(carved) == 6 and len(rest) == 6  # two whole contexts fit in 7
    assert not set(carved["context"]) & set(rest["context"])
    assert sorted(list(rest["id"]) + list(carved["id"])) == sorted(ds["id"])
    assert sorted(carve_by_context(ds.shuffle(seed=3), 7, seed=0)[1]["id"]) == sorted(carved["id"])  # order-free
    rest, carved = carve_by_context(ds, 100, seed=0)
    assert len(rest) == 3 and len(carved) == 9  # never every context
    assert len(carve_by_context(ds, 1, seed=0)[1]) == 3  # at least one context, even above the count
    with pytest.raises(DataError):
        carve_by_context(make_dataset(1), 2, seed=0)
