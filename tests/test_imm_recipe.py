"""IMM as a recipe, without Ray: up-sampled weighted mixtures, the steps it plans, its ablations and baselines."""

import json

import numpy as np
import pyarrow as pa
import pytest

from kd_core.data.domain_settings import eval_split
from kd_core.data.domains import DataSettings, domain_sources, load_domain_examples, parse_domain
from kd_core.data.schema import examples_to_dataset
from kd_core.data.split import limit_by_context
from kd_core.engine.execute import execute
from kd_core.engine.inputs import knowledge_for
from kd_core.engine.mixture import mixture_arrays, upsample_indices
from kd_core.engine.prepare import build_domain_workspace
from kd_core.engine.steps import CollectStep, Source
from kd_core.io.errors import ConfigError
from kd_core.knowledge.table import read_knowledge, unfixed, write_knowledge
from kd_core.methods.imm import IMMSettings, eval_files, imm_recipe, similarity_weights
from kd_core.methods.imm_summary import format_table, imm_outcome, summarise
from tests.helpers import example, write_squad_file

DOMAINS = ("sports", "medicine", "finance")


@pytest.fixture(scope="module")
def ws(tmp_path_factory):
    settings = DataSettings(synthetic_domains=DOMAINS, synthetic_size=12, vocab_size=400)
    return build_domain_workspace(settings, 30, "shared", tmp_path_factory.mktemp("imm"))


def test_upsampling_repeats_every_row_equally_then_samples_the_rest():
    rows = upsample_indices(3, 8, seed=0)
    counts = np.bincount(rows, minlength=3)
    assert len(rows) == 8 and sorted(counts) == [2, 3, 3]
    assert np.array_equal(rows, upsample_indices(3, 8, seed=0))
    assert np.array_equal(upsample_indices(5, 5, seed=1), np.arange(5))
    with pytest.raises(ValueError):
        upsample_indices(5, 4, seed=0)


def test_a_mixture_upsamples_to_the_largest_part_and_reads_knowledge_by_feature_id(ws):
    collected = execute(CollectStep("finance-teacher", "tiny-bert", "shared", split="finance.train",
                                    options=(("top_k", 1), ("with_attention", False))), ws)
    table = read_knowledge(ws.resolve(collected["path"]))
    # The same knowledge stored in reversed row order: a mixture must align it by feature id, not by row.
    reversed_path = ws.step_dir("reversed") / "knowledge.arrow"
    write_knowledge(table.take(pa.array(range(table.num_rows - 1, -1, -1))), reversed_path)
    ws.result_path("reversed").write_text(json.dumps({"kind": "collect", "name": "reversed", "seconds": 0.0,
                                                      "path": str(reversed_path), "rows": table.num_rows,
                                                      "bytes": reversed_path.stat().st_size}))

    def reader(name, tokenizer, split):
        return knowledge_for(name, tokenizer, split, ws)

    sizes = {d: len(ws.features("shared", f"{d}.train")[0]) for d in ("sports", "finance")}
    mixed = mixture_arrays([Source("sports.train", 0.7), Source("finance.train", 0.3)], "shared", ws, 0, reader)
    target = max(sizes.values())
    assert len(mixed["input_ids"]) == 2 * target  # both parts at the size of the larger
    assert np.allclose(mixed["weight"], [0.7] * target + [0.3] * target)

    single = mixture_arrays([Source("finance.train", 1.0, "reversed")], "shared", ws, 0, reader)
    assert len(single["input_ids"]) == sizes["finance"]  # one part: no up-sampling
    seq = single["input_ids"].shape[1]
    assert np.array_equal(single["teacher_start_logits"], unfixed(table.column("start_logits"), (seq,), np.float32))


def _train(name):
    return {"kind": "train", "primary": 10.0, "model_dir": f"/models/{name}", "scores": {}, "seconds": 1.0}


def _run(recipe, done, kept_new=()):
    """Plan the next stage, then finish it with made-up results (select steps keep the new model for ``kept_new``)."""
    steps = recipe(done)
    for step in steps:
        if step.name.startswith("select-"):
            kept = step.candidates[1] if step.name.split("-")[1] in kept_new else step.candidates[0]
            done[step.name] = {"kind": "select", "kept": kept, "primary": 1.0, "model_dir": done[kept]["model_dir"],
                               "seconds": 0.0}
        else:
            done[step.name] = _train(step.name)
    return steps


def test_the_recipe_plans_the_algorithm_and_stops_when_no_domain_improves(ws):
    settings = IMMSettings(iterations=3, epochs=3, transfer_epochs=2, baselines=())
    recipe, done = imm_recipe(settings, ws), {}
    s = similarity_weights(settings, ws)
    initial = _run(recipe, done)
    assert [step.name for step in initial] == [f"theta-{d}-0" for d in DOMAINS] and all(x.teacher for x in initial)
    assert len({step.seed for step in initial}) == 3  # every domain model has its own seed
    knowledge = _run(recipe, done)
    assert [step.name for step in knowledge] == [f"knowledge-{d}-0" for d in DOMAINS] and all(x.teacher for x in knowledge)
    phi = _run(recipe, done)[0]
    assert phi.name == "phi-sports-1" and phi.model == "tiny-bert" and phi.config.epochs == 2 and not phi.teacher
    assert [(x.split, x.weight, x.knowledge) for x in phi.sources] == [
        ("medicine.train", s[0, 1], "knowledge-medicine-0"), ("finance.train", s[0, 2], "knowledge-finance-0")]
    assert [t.kind for t in phi.objective] == ["hard", "prediction_mse"]
    theta = _run(recipe, done)[0]
    assert theta.model == "@phi-sports-1" and theta.config.epochs == 3
    assert [(x.split, x.knowledge) for x in theta.sources] == [("sports.train", "knowledge-sports-0")]
    select = _run(recipe, done, kept_new=("sports", "finance"))[0]
    assert select.candidates == ("theta-sports-0", "theta-sports-1") and select.split == "sports.dev"
    # Iteration 2 reads the kept models: new ones for sports and finance, medicine's iteration-0 model again.
    assert [step.name for step in _run(recipe, done)] == ["knowledge-sports-1", "knowledge-finance-1"]
    phi = _run(recipe, done)[0]
    assert [x.knowledge for x in phi.sources] == ["knowledge-medicine-0", "knowledge-finance-1"]
    _run(recipe, done)
    assert [step.candidates for step in _run(recipe, done)][0] == ("select-sports-1", "theta-sports-2")
    # Nobody improved in iteration 2: no third iteration; the kept models are scored on test, once.
    tests = _run(recipe, done)
    assert [(t.name, t.models, t.split) for t in tests] == [
        ("test-imm-sports", ("@select-sports-2",), "sports.test"), ("test-imm-medicine", ("@select-medicine-2",),
                                                                    "medicine.test"),
        ("test-imm-finance", ("@select-finance-2",), "finance.test")]
    assert recipe(done) == []
    outcome = imm_outcome(done, settings, list(DOMAINS))
    assert outcome["stopped_early"] and outcome["kept"]["medicine"] == [True, False, False]
    assert outcome["final_models"]["sports"] == "/models/theta-sports-1"


def test_ablations_and_baselines_change_the_steps_only(ws):
    settings = IMMSettings(iterations=1, no_kd1=True, no_kd2=True, phi_init="theta",
                           baselines=("mix", "ft", "mft", "ms-ft", "ms-mft", "bam"))
    recipe, done = imm_recipe(settings, ws), {}
    s = similarity_weights(settings, ws)
    closest = {d: DOMAINS[int(np.argmax(np.where(np.eye(3, dtype=bool)[i], -1.0, s[i])))] for i, d in enumerate(DOMAINS)}
    planned = list(_run(recipe, done))
    phi = _run(recipe, done)  # no knowledge stage: neither phi nor theta reads any
    assert [step.name for step in phi] == [f"phi-{d}-1" for d in DOMAINS]
    assert phi[1].model == "@theta-medicine-0" and [t.kind for t in phi[1].objective] == ["hard"]
    assert all(x.knowledge is None for step in phi for x in step.sources)
    assert all(x.knowledge is None for step in _run(recipe, done) for x in step.sources)
    _run(recipe, done, kept_new=DOMAINS)
    (mix,) = _run(recipe, done)
    assert [x.split for x in mix.sources] == [f"{d}.train" for d in DOMAINS] and mix.tags["kd.method"] == "mix"
    assert mix.eval_split == "all.dev"  # one model for all domains chooses on all their dev sets
    assert [step.split for step in _run(recipe, done)] == [f"{d}.dev" for d in DOMAINS]  # mix scored on every domain
    pretrain = _run(recipe, done)[1]
    assert pretrain.name == "ft-pretrain-medicine" and [x.split for x in pretrain.sources] == ["sports.train",
                                                                                             "finance.train"]
    assert [x.split for x in _run(recipe, done)[1].sources] == ["medicine.train"]
    _run(recipe, done)
    assert [x.split for x in _run(recipe, done)[1].sources] == [f"{d}.train" for d in DOMAINS]  # mft: all domains
    # MS-FT and MS-MFT start from the single most similar domain.
    ms_pretrain = _run(recipe, done)
    assert [[x.split for x in step.sources] for step in ms_pretrain] == [[f"{closest[d]}.train"] for d in DOMAINS]
    assert [[x.split for x in step.sources] for step in _run(recipe, done)] == [[f"{d}.train"] for d in DOMAINS]
    _run(recipe, done)
    assert [[x.split for x in step.sources] for step in _run(recipe, done)] == [
        [f"{closest[d]}.train", f"{d}.train"] for d in DOMAINS]
    # BAM: the single-domain models teach one student on all domains, each its own domain; then per domain.
    assert [step.name for step in _run(recipe, done)] == [f"knowledge-{d}-0" for d in DOMAINS]
    (bam,) = _run(recipe, done)
    assert [(x.split, x.weight, x.knowledge) for x in bam.sources] == [
        (f"{d}.train", 1.0, f"knowledge-{d}-0") for d in DOMAINS]
    assert [t.kind for t in bam.objective] == ["hard", "prediction_mse"] and bam.eval_split == "all.dev"
    bam_tuned = _run(recipe, done)
    assert [(step.model, [x.split for x in step.sources]) for step in bam_tuned] == [
        ("@bam", [f"{d}.train"]) for d in DOMAINS]
    tests = _run(recipe, done)
    assert {step.name for step in tests} == {f"test-{m}-{d}" for m in settings.methods for d in DOMAINS}
    assert {step.models[0] for step in tests if step.name.startswith("test-mix-")} == {"@mix"}
    assert all(step.split.endswith(".test") for step in tests)
    assert recipe(done) == []
    trained = [step for step in planned + phi + [mix, pretrain, bam, *bam_tuned] if hasattr(step, "keep_best")]
    assert all(step.keep_best and step.eval_split.endswith(".dev") for step in trained)  # choices on dev, alike
    uniform = similarity_weights(IMMSettings(no_similarity=True), ws)
    assert np.allclose(uniform, [[0, .5, .5], [.5, 0, .5], [.5, .5, 0]])


def test_the_kd_target_picks_the_kd_term_of_phi_and_theta(ws):
    for target, kind in (("distributions", "prediction_mse"), ("gold", "gold_prediction_mse"),
                         ("logits", "span_logit_mse")):
        recipe, done = imm_recipe(IMMSettings(kd_target=target, baselines=(), iterations=1), ws), {}
        _run(recipe, done), _run(recipe, done)
        phi, theta = _run(recipe, done)[0], _run(recipe, done)[0]
        assert [t.kind for t in phi.objective] == [t.kind for t in theta.objective] == ["hard", kind]
    with pytest.raises(ConfigError, match="kd_target"):
        IMMSettings(kd_target="probabilities")


def test_extra_evaluation_files_are_scored_by_the_final_models_of_the_domains_they_name(tmp_path):
    questions = [example(f"e{i}", f"The match {i} ended {i}-{i + 1} in Lyon.", f"How did match {i} end?", f"{i}-{i + 1}")
                 for i in range(3)]
    adversarial = write_squad_file(tmp_path / "addsent.json", questions, "The match 9 ended 0-0 in Paris.")
    plain = write_squad_file(tmp_path / "plain.json", questions)
    data = DataSettings(synthetic_domains=DOMAINS, synthetic_size=12, vocab_size=400,
                        eval=(str(adversarial), f"medicine={plain}"))
    ws = build_domain_workspace(data, 30, "shared", tmp_path / "run")
    assert eval_files(ws) == {"addsent.json": list(DOMAINS), "plain.json": ["medicine"]}
    assert len(ws.examples(eval_split("finance", "addsent.json"))) == 6 and len(ws.examples("medicine.eval.plain.json")) == 3
    assert "sports.eval.plain.json" not in ws.splits

    settings = IMMSettings(iterations=1, baselines=("mix",))
    recipe, done = imm_recipe(settings, ws), {}
    while (last := _run(recipe, done, kept_new=("sports",))):
        final = last
    tests = {step.name: step for step in final if step.name.startswith("test-")}
    extra = {step.name: step for step in final if step.name.startswith("eval-")}
    assert set(extra) == {f"eval-{m}-{d}-addsent.json" for m in ("imm", "mix") for d in DOMAINS} | {
        "eval-imm-medicine-plain.json", "eval-mix-medicine-plain.json"}
    for name, step in extra.items():
        method, domain = step.tags["kd.method"], step.tags["kd.domain"]
        assert step.models == tests[f"test-{method}-{domain}"].models  # the final model, as on test
        assert step.split == eval_split(domain, step.tags["kd.eval"]) and name.endswith(step.tags["kd.eval"])
    assert extra["eval-imm-sports-addsent.json"].models == ("@select-sports-1",)
    assert extra["eval-mix-finance-addsent.json"].models == ("@mix",)
    assert recipe.planned == _stages(imm_recipe(settings, ws))  # the extra evaluations share the test stage

    for name in extra:
        f1 = 40.0 + len(name)
        done[name]["scores"] = {"f1": f1, "exact_match": 30.0} | ({
            "adversarial_f1": f1 - 20, "adversarial_exact_match": 10.0, "original_f1": f1 + 5,
            "original_exact_match": None} if "addsent" in name else {})
    summary = summarise(done, settings, ws)
    assert summary["eval"]["plain.json"] == {"imm": {"medicine": 40.0 + len("eval-imm-medicine-plain.json")},
                                             "mix": {"medicine": 40.0 + len("eval-mix-medicine-plain.json")}}
    assert set(summary["eval_adversarial"]) == {"addsent.json"}  # a plain file has no adversarial scores
    finance = summary["eval_adversarial"]["addsent.json"]["imm"]["finance"]
    assert finance["adversarial_f1"] == 20.0 + len("eval-imm-finance-addsent.json") and finance["original_f1"] == (
        45.0 + len("eval-imm-finance-addsent.json"))
    table = format_table(summary).splitlines()
    row = table[table.index("plain.json: F1 of each method's final model of the domains that score it:") + 1]
    assert row.split() == ["imm", "-", f"{40.0 + len('eval-imm-medicine-plain.json'):.2f}", "-"]
    assert any(line.startswith("addsent.json: F1 (adversarial F1") for line in table)

    with pytest.raises(ConfigError, match="names no domain"):
        DataSettings(eval=(f"travel={plain}",))
    with pytest.raises(ConfigError, match="distinct file names"):
        DataSettings(eval=(str(plain), f"sports={tmp_path / 'other' / 'plain.json'}"))


def test_domain_specs_and_limits():
    assert parse_domain("wiki=a.json,b.json", "/data") == parse_domain("wiki=/data/a.json,/data/b.json")
    assert parse_domain("x=hf:squad", "/data").train == "hf:squad"
    for bad in ("wiki", "=a.json", "wiki=", "wiki=a,b,c", "wiki=a,"):
        with pytest.raises(ConfigError):
            parse_domain(bad)
    with pytest.raises(ConfigError, match="at least 2"):
        domain_sources(DataSettings(domains=("only=x.json",)))
    with pytest.raises(ConfigError, match="duplicate"):
        load_domain_examples(DataSettings(domains=("a=x.json", "a=y.json")))

    ds = examples_to_dataset([example(f"q{i}", f"Context {i // 2} says 1{i // 2}.", "What?", f"1{i // 2}")
                              for i in range(10)])
    limited = limit_by_context(ds, 5, seed=0)
    assert len(limited) == 4  # whole contexts of 2 questions: 2 contexts fit in 5
    assert len(set(limited["context"])) == 2
    assert limit_by_context(ds, 50, seed=0) is ds


def test_invalid_imm_hyperparameters_are_refused():
    for kwargs, field in [({"iterations": -1}, "iterations"), ({"phi_init": "x"}, "phi_init"),
                          ({"lambda_schedule": "cosine"}, "lambda_schedule"), ({"transfer_epochs": 0}, "transfer_epochs"),
                          ({"epochs": 0}, "epochs"), ({"baselines": ("imm",)}, "baselines"),
                          ({"baselines": ("ft", "ft")}, "baselines"), ({"kd_target": "probabilities"}, "kd_target")]:
        with pytest.raises(ConfigError, match=field):
            IMMSettings(**kwargs)
    # The main method is not run again as a baseline (the default baselines include single).
    assert IMMSettings(method="single").baselines == ("ft",)


def _stages(recipe, kept_new=DOMAINS):
    """How many stages a run goes through (the runner's calls), every select keeping ``kept_new``'s new model."""
    done, count = {}, 0
    while _run(recipe, done, kept_new):
        count += 1
    return count


@pytest.mark.parametrize("settings", [
    IMMSettings(iterations=3, baselines=()),
    IMMSettings(iterations=2, no_kd1=True, no_kd2=True, baselines=("mix", "ft")),
    IMMSettings(iterations=2, no_kd2=True, baselines=("bam", "ms-mft")),
    IMMSettings(iterations=1, baselines=("mix", "ft", "mft", "ms-ft", "ms-mft", "bam")),
    IMMSettings(method="bam", baselines=("single",)),
    IMMSettings(method="mix", baselines=("ft",)),
])
def test_the_planned_stage_count_is_the_stages_a_run_goes_through_when_every_iteration_runs(ws, settings):
    recipe = imm_recipe(settings, ws)
    assert recipe.planned == _stages(recipe)
    assert recipe.at_most == ("imm" in settings.methods and settings.iterations > 1)


def test_when_imm_stops_early_it_runs_fewer_stages_than_at_most_planned(ws):
    recipe = imm_recipe(IMMSettings(iterations=3, baselines=("mix",)), ws)
    assert recipe.at_most and _stages(recipe, kept_new=()) == recipe.planned - 8  # iterations 2 and 3 skipped
