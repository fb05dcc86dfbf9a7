"""The dataflow driver without Ray: steps start when their inputs are done, in planning order, as the runner has
room; stored results are taken without running; ``until`` limits the drive; an input made elsewhere holds nothing back."""

from kd_core.engine.local import flow, in_order, staged
from kd_core.engine.steps import EvaluateStep, SelectStep, model_ref, step_inputs


def _eval(name: str, *models: str) -> EvaluateStep:
    return EvaluateStep(name, tuple(model_ref(m) for m in models) or ("tiny-bert",), "teacher")


class TwoSlots:
    """Two workers; a step finishes when the test says (``order``: the names in the order they finish)."""

    def __init__(self, order: list[str], stored: dict | None = None) -> None:
        self.order, self.stored, self.running, self.log = order, stored or {}, [], []

    def reuse(self, step):
        return self.stored.get(step.name)

    def can_start(self, step, starting):
        return len(self.running) + len(starting) < 2

    def start(self, steps, stages):
        self.running += [s.name for s in steps]
        self.log += [("start", s.name) for s in steps]

    def wait(self):
        name = next(n for n in self.order if n in self.running)
        self.running.remove(name)
        self.log.append(("done", name))
        return [(_eval(name), {"kept": "a"})]


def test_a_step_of_the_next_stage_starts_when_its_own_input_is_done_while_a_slower_step_still_runs():
    recipe = in_order([_eval("a"), _eval("b")], [_eval("after-b", "b"), _eval("after-a", "a")])
    runner = TwoSlots(order=["b", "after-b", "a", "after-a"])
    results = flow(recipe, runner)
    assert set(results) == {"a", "b", "after-a", "after-b"}
    assert runner.log.index(("start", "after-b")) < runner.log.index(("done", "a"))  # no barrier after stage 1
    assert runner.log.index(("done", "a")) < runner.log.index(("start", "after-a"))


def test_stored_results_are_taken_without_running_and_planning_waits_for_results_it_reads():
    def stages(done):
        yield [_eval("a")]
        yield [SelectStep("keep", ("a",))]
        yield [_eval(f"then-{done['keep']['kept']}")]  # planned only once keep has finished
        if "never-planned" not in done:  # ``in`` answers, it does not wait (IMM counts finished iterations so)
            yield [_eval("last")]

    runner = TwoSlots(order=["keep", "then-a", "last"], stored={"a": {"kept": "a"}})
    results = flow(staged(stages), runner)
    assert ("start", "a") not in runner.log and results["a"] == {"kept": "a"}
    assert [e for e in runner.log if e[0] == "start"] == [("start", "keep"), ("start", "then-a"), ("start", "last")]


def test_until_leaves_out_the_steps_it_refuses_and_an_input_made_elsewhere_holds_nothing_back():
    recipe = in_order([_eval("a")], [_eval("b", "a")])
    assert set(flow(recipe, TwoSlots(order=["a", "b"]), until=lambda step: step.name == "a")) == {"a"}
    # an input no step of this drive makes (another drive's result) holds nothing back: the step's executor reads it
    assert set(flow(in_order([_eval("reader", "elsewhere")]), TwoSlots(order=["reader"]))) == {"reader"}
    assert step_inputs(_eval("e", "x", "y", "x")) == ("x", "y")
    assert step_inputs(SelectStep("s", ("theta-a-0", "theta-a-1"))) == ("theta-a-0", "theta-a-1")
