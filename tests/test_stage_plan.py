"""A recipe's planned number of stages (the "of n" of the progress lines): the stages its steps are started in."""

from kd_core.engine.local import InTurn, flow, in_order, stage_plan, staged
from kd_core.engine.steps import EvaluateStep
from kd_core.methods.hinton import HintonSettings, hinton_recipe


def _eval(name: str) -> EvaluateStep:
    return EvaluateStep(name, ("tiny-bert",), "teacher")


class _Stages(InTurn):
    """Runs nothing; records the stage number of every step started."""

    def __init__(self) -> None:
        super().__init__(lambda steps: [{} for _ in steps])
        self.seen: list[int | None] = []

    def start(self, steps, stages) -> None:
        self.seen += list(stages)
        super().start(steps, stages)


def _calls(recipe) -> int:
    runner = _Stages()
    flow(recipe, runner)
    assert runner.seen == sorted(runner.seen)  # one at a time, the earliest planned first
    return len(set(runner.seen))


def test_in_order_counts_the_stages_that_run_skipping_empty_ones_and_ones_planned_before():
    a, b, c = _eval("a"), _eval("b"), _eval("c")
    recipe = in_order([a], [], [a], [a, b], [c])  # [] and the second [a] are no stage; [a, b] runs b
    assert stage_plan(recipe) == (4 - 1, False) == (_calls(recipe), False)


def test_a_recipe_that_does_not_know_its_stages_says_so():
    assert stage_plan(staged(lambda done: ([_eval("a")],))) == (None, False)
    assert stage_plan(lambda done: []) == (None, False)  # any callable recipe


def test_hinton_plans_its_five_stages():
    for settings in (HintonSettings(), HintonSettings(members=3, baseline=True)):
        recipe = hinton_recipe(settings)
        assert recipe.planned == _calls(recipe) == 5
