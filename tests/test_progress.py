"""The driver's stage lines: on a terminal one rewritten line per stage; elsewhere start and end lines; --quiet none."""

import io

from cluster.progress import StageProgress, clock


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _stage(progress: StageProgress) -> None:
    progress.stage_started(["theta-a-1", "theta-b-1"], reused=["theta-c-1"])
    progress.step_started("theta-a-1", "w0 cpu 127.0.0.1")
    progress.step_started("theta-b-1", "w1 cuda:0 10.0.0.2")
    progress.step_finished("theta-b-1")
    progress.step_finished("theta-a-1")
    progress.stage_finished()


def test_in_a_log_each_stage_is_a_start_line_and_an_end_line_naming_where_each_step_ran():
    out = io.StringIO()
    progress = StageProgress("imm", stream=out)
    _stage(progress)
    progress.stage_started([], reused=["x"])  # nothing to run: nothing printed
    progress.stage_finished()
    lines = out.getvalue().splitlines()
    assert "\r" not in out.getvalue() and len(lines) == 2
    assert lines[0].startswith("[imm 0:00:0") and "stage 1 | running 2 step(s): theta-a-1, theta-b-1" in lines[0]
    assert lines[0].endswith("; 1 done before")
    assert "stage 1 | 2/2 steps done in" in lines[1]
    assert lines[1].endswith("theta-a-1 @ w0 cpu 127.0.0.1, theta-b-1 @ w1 cuda:0 10.0.0.2")


def test_on_a_terminal_a_stage_is_one_line_rewritten_as_steps_finish():
    out = Terminal()
    _stage(StageProgress("a2d", stream=out))
    text = out.getvalue()
    assert text.count("\n") == 1 and text.endswith("2/2 steps done in 0.0 s\x1b[K\n")
    updates = text.split("\r")[1:]
    assert "0/2 steps | theta-a-1 @ w0 cpu 127.0.0.1, theta-b-1 @ w1 cuda:0 10.0.0.2" in updates[2]
    assert "1/2 steps | theta-a-1 @ w0 cpu 127.0.0.1\x1b[K" == updates[3].split(" | ", 1)[1]


def test_quiet_prints_nothing_and_clock_formats_hours():
    out = Terminal()
    _stage(StageProgress("kd", enabled=False, stream=out))
    assert out.getvalue() == ""
    assert clock(3725.9) == "1:02:05" and clock(0) == "0:00:00"
