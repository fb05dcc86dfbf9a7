"""The driver's progress lines: a line per step started and finished, its "stage k of n" and the elapsed clock;
on a terminal the finished lines and one status line rewritten in place, --quiet nothing; a worker's node only
on a multi-node cluster."""

import io

from cluster.progress import StepProgress, alive_nodes, clock, stage_label, worker_place


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _steps(progress: StepProgress) -> None:
    """theta-a-1 (stage 1) and phi-b-2 (stage 2) run at once; phi-b-2 ends first."""
    progress.reused("theta-c-1")
    progress.step_started("theta-a-1", 1, "w0 cpu")
    progress.step_started("phi-b-2", 2, "w1 cuda:0")
    progress.step_finished("phi-b-2")
    progress.step_finished("theta-a-1")


def test_in_a_log_each_step_is_a_start_line_and_an_end_line_saying_its_stage_of_n_and_where_it_ran():
    out = io.StringIO()
    _steps(StepProgress("imm", stream=out, planned=3))
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 5
    assert lines[0].startswith("[imm 0:00:0") and lines[0].endswith("] | 1 step(s) done before: theta-c-1")
    assert lines[1].endswith("] stage 1 of 3 | started theta-a-1 @ w0 cpu")
    assert lines[2].endswith("] stage 2 of 3 | started phi-b-2 @ w1 cuda:0")
    assert "] stage 2 of 3 | phi-b-2 done in 0.0 s @ w1 cuda:0 | 2 steps done; running theta-a-1 @ w0 cpu" in lines[3]
    assert lines[4].endswith("] stage 1 of 3 | theta-a-1 done in 0.0 s @ w0 cpu | 3 steps done")


def test_the_elapsed_clock_counts_from_the_start_of_the_job_and_a_step_says_how_long_it_took(monkeypatch):
    import cluster.progress as progress_module

    now = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    progress = StepProgress("a2d", stream=out, planned=6)
    now[0] += 3725.0  # 1 h 2 min 5 s into the job
    progress.step_started("student", 4, "w0 cpu")
    now[0] += 12.5
    progress.step_finished("student")
    first, second = out.getvalue().splitlines()
    assert first == "[a2d 1:02:05] stage 4 of 6 | started student @ w0 cpu"
    assert second == "[a2d 1:02:17] stage 4 of 6 | student done in 12.5 s @ w0 cpu | 1 steps done"


def test_the_total_is_at_most_n_when_a_method_may_stop_early_and_left_out_when_unknown():
    assert stage_label(2, 11) == "stage 2 of 11"
    assert stage_label(2, 11, at_most=True) == "stage 2 of at most 11"
    assert stage_label(4) == "stage 4"
    assert stage_label(12, 11) == "stage 12"  # never a false "12 of 11"
    assert stage_label(4, 11, last=5) == "stages 4-5 of 11" and stage_label(4, 4, last=5) == "stages 4-5"
    out = io.StringIO()
    progress = StepProgress("kd", stream=out)
    progress.plan(None)
    _steps(progress)
    assert "] stage 1 | started theta-a-1" in out.getvalue()
    progress.plan(9, at_most=True)
    _steps(progress)
    assert "] stage 2 of at most 9 | started phi-b-2" in out.getvalue()


def test_on_a_terminal_finished_steps_are_lines_and_the_running_ones_one_status_line_rewritten():
    out = Terminal()
    _steps(StepProgress("a2d", stream=out, planned=5))
    text = out.getvalue()
    lines = [part for part in text.split("\r") if part]
    assert lines[0].endswith("| 1 step(s) done before: theta-c-1\x1b[K\n")
    assert lines[1].endswith("] stage 1 of 5 | 1 steps done | theta-a-1 @ w0 cpu\x1b[K")
    assert lines[2].endswith("] stages 1-2 of 5 | 1 steps done | theta-a-1 @ w0 cpu, phi-b-2 @ w1 cuda:0\x1b[K")
    assert lines[3].endswith("] stage 2 of 5 | phi-b-2 done in 0.0 s @ w1 cuda:0\x1b[K\n")
    assert lines[4].endswith("] stage 1 of 5 | 2 steps done | theta-a-1 @ w0 cpu\x1b[K")
    assert text.endswith("] stage 1 of 5 | theta-a-1 done in 0.0 s @ w0 cpu\x1b[K\n")  # nothing left running


def test_quiet_prints_nothing_and_clock_formats_hours():
    out = Terminal()
    _steps(StepProgress("kd", enabled=False, stream=out))
    assert out.getvalue() == ""
    assert clock(3725.9) == "1:02:05" and clock(0) == "0:00:00"


def _node(ip: str, alive: bool = True) -> dict:
    return {"NodeManagerAddress": ip, "Alive": alive, "Resources": {"CPU": 2.0}}


def test_the_node_address_is_shown_only_on_a_cluster_of_more_than_one_alive_node():
    one = [_node("192.0.2.2")]
    assert worker_place(0, "cpu", "192.0.2.2", one) == "w0 cpu"
    assert worker_place(1, "cpu", "192.0.2.2", [_node("192.0.2.2"), _node("10.0.0.9", alive=False)]) == "w1 cpu"
    two = [_node("10.0.0.1"), _node("10.0.0.2")]
    assert worker_place(2, "cuda:0", "10.0.0.2", two) == "w2 cuda:0 10.0.0.2"
    assert alive_nodes(two + [_node("10.0.0.3", alive=False)]) == 2 and alive_nodes([]) == 0
