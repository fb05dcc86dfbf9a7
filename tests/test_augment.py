"""Transfer-set augmentation (Tang et al. 2019, section 3.3): expectations computed by hand."""

import re

import pytest

from kd_core.data.augment import (
    AugmentSettings,
    augment,
    coarse_tag,
    embedded_lexicon,
    lexicon_from_mapping,
    read_lexicon,
    transfer_set,
)
from kd_core.data.schema import SENTENCE_FEATURES, sentences_to_dataset
from kd_core.data.synthetic_sentences import generate_task
from kd_core.io.errors import ConfigError, DataError

ONLY_MASK = {"p_mask": 1.0, "p_pos": 0.0, "p_ng": 0.0}
ONLY_POS = {"p_mask": 0.0, "p_pos": 1.0, "p_ng": 0.0}
ONLY_NGRAM = {"p_mask": 0.0, "p_pos": 0.0, "p_ng": 1.0}

CITY_LEXICON = {"Lisbon": "PROPN-city", "Porto": "PROPN-city", "Graz": "PROPN-city",
                "great": "ADJ", "dull": "ADJ", "film": "NOUN"}


def single(*texts, task="sentiment"):
    return sentences_to_dataset([{"id": f"s{i}", "task": task, "domain": "reviews", "text_a": t, "label": 1}
                                 for i, t in enumerate(texts)])


def pairs(*texts):
    return sentences_to_dataset([{"id": f"p{i}", "task": "entailment", "domain": "events", "text_a": a,
                                  "text_b": b, "label": 0} for i, (a, b) in enumerate(texts)])


def test_p_mask_one_masks_every_word_and_punctuation_stays_with_its_word():
    data = single("The film was great, really.", "Honestly, dull")
    out = augment(data, AugmentSettings(**ONLY_MASK, n_iter=1), lexicon_from_mapping({}), pair=False)
    # 5 whitespace tokens ("great," and "really." are one word each), then 2
    assert out["text_a"] == ["[MASK] [MASK] [MASK] [MASK] [MASK]", "[MASK] [MASK]"]
    assert out["text_b"] == ["", ""]
    other = augment(single("a b"), AugmentSettings(**ONLY_MASK, n_iter=1), lexicon_from_mapping({}), pair=False,
                    mask_token="<m>")
    assert other["text_a"] == ["<m> <m>"]


def test_p_pos_one_replaces_each_tagged_word_by_another_of_its_tag_and_keeps_the_rest():
    lexicon = lexicon_from_mapping(CITY_LEXICON)
    data = single("Maria saw a great film in Lisbon.", "Great, lisbon", "Maria saw nothing")
    out = augment(data, AugmentSettings(**ONLY_POS, n_iter=12, seed=1), lexicon, pair=False)
    by_original = {}
    for row in out:
        by_original.setdefault(row["id"].split("~")[0], set()).add(row["text_a"])
    # s0: "great" -> "dull" (the only other ADJ), "film" stays (alone in NOUN), "Lisbon." -> "Porto." or "Graz."
    assert by_original["s0"] == {"Maria saw a dull film in Porto.", "Maria saw a dull film in Graz."}
    # s1: capitalisation of the first letter follows the original word
    assert by_original["s1"] == {"Dull, porto", "Dull, graz"}
    # s2: no tagged word, so every draw equals the original and is dropped
    assert "s2" not in by_original


def test_mask_and_pos_draws_are_exclusive_with_the_asked_shares():
    # every word is tagged and has an alternative, so a word is either masked, replaced or kept
    lexicon = lexicon_from_mapping({"x": "T", "y": "T"})
    data = single(*[" ".join(["x"] * 50) + f" id{i}" for i in range(40)])
    out = augment(data, AugmentSettings(p_mask=0.3, p_pos=0.2, p_ng=0.0, n_iter=1), lexicon, pair=False)
    words = [w for text in out["text_a"] for w in text.split()[:50]]
    assert len(words) == 50 * 40
    masked, replaced = words.count("[MASK]") / len(words), words.count("y") / len(words)
    assert words.count("[MASK]") + words.count("y") + words.count("x") == len(words)
    assert masked == pytest.approx(0.3, abs=0.04)
    assert replaced == pytest.approx(0.2, abs=0.04)


def test_p_ng_one_cuts_each_output_to_a_contiguous_ngram_of_one_to_five_words():
    originals = [" ".join(f"w{i}_{j}" for j in range(12)) for i in range(30)] + ["short one here"]
    out = augment(single(*originals), AugmentSettings(**ONLY_NGRAM, n_iter=6), lexicon_from_mapping({}),
                  pair=False)
    lengths = set()
    for row in out:
        index = int(row["id"].split("~")[0][1:])
        source, words = originals[index].split(), row["text_a"].split()
        assert 1 <= len(words) <= min(5, len(source))
        starts = [s for s in range(len(source) - len(words) + 1) if source[s:s + len(words)] == words]
        assert starts, (row["text_a"], originals[index])
        lengths.add(len(words))
    assert lengths == {1, 2, 3, 4, 5}  # n is drawn, not fixed
    capped = augment(single(*originals), AugmentSettings(**ONLY_NGRAM, n_iter=6, max_ngram=2),
                     lexicon_from_mapping({}), pair=False)
    assert {len(t.split()) for t in capped["text_a"]} == {1, 2}


def test_outputs_carry_no_label_and_ids_name_the_original_and_the_repetition():
    data = single("one two three", "four five six seven")
    out = augment(data, AugmentSettings(p_mask=0.5, p_pos=0.0, p_ng=0.0, n_iter=5), lexicon_from_mapping({}),
                  pair=False)
    assert out.features == SENTENCE_FEATURES
    assert len(out) > 0
    assert set(out["label"]) == {None} and set(out["score"]) == {None}
    assert set(out["task"]) == {"sentiment"} and set(out["domain"]) == {"reviews"}
    assert all(re.fullmatch(r"s[01]~aug[0-4]", i) for i in out["id"])
    assert len(set(out["id"])) == len(out)


def test_same_seed_same_output_other_seed_different_and_examples_are_independent():
    lexicon = embedded_lexicon()
    data = generate_task("sentiment", 20, 0, 0.1)
    first = augment(data, AugmentSettings(seed=3), lexicon, pair=False)
    again = augment(data, AugmentSettings(seed=3), lexicon, pair=False)
    other = augment(data, AugmentSettings(seed=4), lexicon, pair=False)
    assert first.to_list() == again.to_list()
    assert first["text_a"] != other["text_a"]
    # an example's draws depend on its id and the seed, not on the other examples
    last = data.select([19])
    alone = augment(last, AugmentSettings(seed=3), lexicon, pair=False)
    mine = [row for row in first.to_list() if row["id"].startswith(last[0]["id"] + "~")]
    assert alone.to_list() == mine


def test_duplicates_of_originals_and_of_earlier_augmentations_are_dropped():
    lexicon = lexicon_from_mapping({})
    # p_mask = 1: every repetition gives the same text, so one example per original
    out = augment(single("a b c", "d e"), AugmentSettings(**ONLY_MASK, n_iter=3), lexicon, pair=False)
    assert out["id"] == ["s0~aug0", "s1~aug0"]
    assert out["text_a"] == ["[MASK] [MASK] [MASK]", "[MASK] [MASK]"]
    # no perturbation at all: every draw equals its original
    assert len(augment(single("a b c"), AugmentSettings(p_mask=0, p_pos=0, p_ng=0), lexicon, pair=False)) == 0
    # across examples: the second original masks to the same text as the first, and the third
    # masks to the text of an original
    out = augment(single("a b", "c d", "x y z", "[MASK] [MASK] [MASK]"), AugmentSettings(**ONLY_MASK, n_iter=2),
                  lexicon, pair=False)
    assert out["id"] == ["s0~aug0"]


def test_pair_tasks_perturb_both_sides_and_cut_each_side_on_its_own():
    lexicon = lexicon_from_mapping({})
    data = pairs(("a b c", "d e"), ("f g", "h i j k"))
    out = augment(data, AugmentSettings(**ONLY_MASK, n_iter=2), lexicon, pair=True)
    assert list(zip(out["text_a"], out["text_b"])) == [("[MASK] [MASK] [MASK]", "[MASK] [MASK]"),
                                                       ("[MASK] [MASK]", "[MASK] [MASK] [MASK] [MASK]")]
    assert set(out["task"]) == {"entailment"} and set(out["label"]) == {None}
    a_side = " ".join(f"a{j}" for j in range(10))
    b_side = " ".join(f"b{j}" for j in range(10))
    out = augment(pairs((a_side, b_side)), AugmentSettings(**ONLY_NGRAM, n_iter=20), lexicon, pair=True)
    assert len(out) > 1
    for a, b in zip(out["text_a"], out["text_b"]):
        assert a in a_side and b in b_side and 1 <= len(a.split()) <= 5 and 1 <= len(b.split()) <= 5
    # the two sides' n-grams are drawn independently: not always at the same place
    assert any(a.replace("a", "") != b.replace("b", "") for a, b in zip(out["text_a"], out["text_b"]))
    with pytest.raises(DataError, match="p0"):
        augment(pairs(("a", "b")), AugmentSettings(), lexicon, pair=False)


def test_lexicon_tsv_is_read_and_a_bad_line_is_named(tmp_path):
    good = tmp_path / "good.tsv"
    good.write_text("# word\ttag\nLisbon\tPROPN\n\nporto\tPROPN\ngreat\tADJ\n", encoding="utf-8")
    lexicon = read_lexicon(good)
    assert lexicon.tag("lisbon") == "PROPN" and lexicon.tag("PORTO") == "PROPN" and lexicon.tag("great") == "ADJ"
    assert lexicon.tag("film") is None
    bad = tmp_path / "bad.tsv"
    bad.write_text("Lisbon\tPROPN\nporto\tPROPN\ngreat ADJ\n", encoding="utf-8")
    with pytest.raises(DataError, match=r"bad\.tsv: line 3: ") as err:
        read_lexicon(bad)
    assert err.value.where == "line 3"
    clash = tmp_path / "clash.tsv"
    clash.write_text("great\tADJ\nGreat\tNOUN\n", encoding="utf-8")
    with pytest.raises(DataError, match="line 2"):
        read_lexicon(clash)


def test_embedded_lexicon_tags_the_task_vocabulary():
    lexicon = embedded_lexicon()
    assert lexicon.tag("Lisbon") is not None and lexicon.tag("Lisbon") == lexicon.tag("Porto")
    assert coarse_tag(lexicon.tag("Lisbon")) == "PROPN"
    assert coarse_tag(lexicon.tag("great")) == "ADJ"
    assert lexicon.tag("Maria") != lexicon.tag("Lisbon")  # a person is not swapped for a city
    assert coarse_tag(lexicon.tag("bought")) == "VERB" and coarse_tag(lexicon.tag("film")) == "NOUN"
    assert "train ride" not in lexicon and lexicon.tag("the") is None
    assert lexicon.tag("Oslo") is None  # hypothesis-only words are never put into a premise


@pytest.mark.parametrize("fields, name", [
    ({"p_mask": -0.1}, "p_mask"), ({"p_pos": 1.5}, "p_pos"), ({"p_ng": 2.0}, "p_ng"),
    ({"p_mask": 0.6, "p_pos": 0.5}, "p_pos"), ({"n_iter": 0}, "n_iter"), ({"max_ngram": 0}, "max_ngram"),
])
def test_invalid_settings_are_refused(fields, name):
    with pytest.raises(ConfigError) as err:
        AugmentSettings(**fields)
    assert err.value.source == "augment" and err.value.where == name


def test_default_settings_on_the_embedded_sentiment_task_and_the_transfer_set():
    train = generate_task("sentiment", 50, 0, 0.1)
    settings = AugmentSettings()
    out = augment(train, settings, embedded_lexicon(), pair=False)
    assert settings.n_iter * 0.5 * 50 <= len(out) <= settings.n_iter * 50
    texts = set(out["text_a"])
    assert len(texts) == len(out)  # distinct
    assert not texts & set(train["text_a"])  # none is an original
    both = transfer_set(train, out)
    assert both.features == SENTENCE_FEATURES
    assert len(both) == len(train) + len(out)
    assert list(both["id"]) == list(train["id"]) + list(out["id"])
    assert list(both["label"][:50]) == list(train["label"]) and set(both["label"][50:]) == {None}
