"""The driver's stage lines: "stage k of n" and the elapsed clock; on a terminal one rewritten line per stage,
elsewhere start and end lines, --quiet none; a worker's node only on a multi-node cluster."""

import io

from cluster.progress import StageProgress, alive_nodes, clock, stage_label, worker_place


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _stage(progress: StageProgress) -> None:
    progress.stage_started(["theta-a-1", "theta-b-1"], reused=["theta-c-1"])
    progress.step_started("theta-a-1", "w0 cpu")
    progress.step_started("theta-b-1", "w1 cuda:0")
    progress.step_finished("theta-b-1")
    progress.step_finished("theta-a-1")
    progress.stage_finished()


def test_in_a_log_each_stage_is_a_start_line_and_an_end_line_saying_k_of_n_and_where_each_step_ran():
    out = io.StringIO()
    progress = StageProgress("imm", stream=out, planned=3)
    _stage(progress)
    progress.stage_started([], reused=["x"])  # nothing to run: nothing printed, but the stage counts
    progress.stage_finished()
    _stage(progress)
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 4
    assert lines[0].startswith("[imm 0:00:0") and "] stage 1 of 3 | running 2 step(s): theta-a-1, theta-b-1" in lines[0]
    assert lines[0].endswith("; 1 done before")
    assert "] stage 1 of 3 | 2/2 steps done in 0.0 s: " in lines[1]
    assert lines[1].endswith("theta-a-1 @ w0 cpu, theta-b-1 @ w1 cuda:0")
    assert "] stage 3 of 3 | running" in lines[2] and "] stage 3 of 3 | 2/2 steps done in" in lines[3]


def test_the_elapsed_clock_counts_from_the_start_of_the_job(monkeypatch):
    import cluster.progress as progress_module

    now = [1000.0]
    monkeypatch.setattr(progress_module.time, "monotonic", lambda: now[0])
    out = io.StringIO()
    progress = StageProgress("a2d", stream=out, planned=6)
    now[0] += 3725.0  # 1 h 2 min 5 s into the job
    progress.stage_started(["student"])
    now[0] += 12.5
    progress.stage_finished()
    first, second = out.getvalue().splitlines()
    assert first.startswith("[a2d 1:02:05] stage 1 of 6 | running 1 step(s): student")
    assert second.startswith("[a2d 1:02:17] stage 1 of 6 | 0/1 steps done in 12.5 s")


def test_the_total_is_at_most_n_when_a_method_may_stop_early_and_left_out_when_unknown():
    assert stage_label(2, 11) == "stage 2 of 11"
    assert stage_label(2, 11, at_most=True) == "stage 2 of at most 11"
    assert stage_label(4) == "stage 4"
    assert stage_label(12, 11) == "stage 12"  # never a false "12 of 11"
    out = io.StringIO()
    progress = StageProgress("kd", stream=out)
    progress.plan(None)
    _stage(progress)
    assert "] stage 1 | running" in out.getvalue()
    progress.plan(9, at_most=True)
    _stage(progress)
    assert "] stage 2 of at most 9 | running" in out.getvalue()


def test_on_a_terminal_a_stage_is_one_line_rewritten_as_steps_finish():
    out = Terminal()
    _stage(StageProgress("a2d", stream=out, planned=5))
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("2/2 steps done in 0.0 s\x1b[K\n")
    updates = text.split("\r")[1:]
    assert all("] stage 1 of 5 | " in update for update in updates)
    assert "0/2 steps | theta-a-1 @ w0 cpu, theta-b-1 @ w1 cuda:0" in updates[2]
    assert "1/2 steps | theta-a-1 @ w0 cpu\x1b[K" == updates[3].split(" | ", 1)[1]


def test_quiet_prints_nothing_and_clock_formats_hours():
    out = Terminal()
    _stage(StageProgress("kd", enabled=False, stream=out))
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
