"""What `bertops run` shows while it runs: one progress line per candidate, prefixed with its id, with
loss, samples/s and ETA; no third-party chatter; a log file without colour codes."""

from __future__ import annotations

import fcntl
import io
import logging
import os
import pty
import re
import struct
import termios
from pathlib import Path

import pytest

from bertops.step import step
from bertops.training_progress import TrainingProgress, parse
from pipelines.run_local import _StepLogFilter

# What kfp.local prints while two candidates fine-tune in parallel (its task lines are coloured, the
# tasks' own lines indented by how many tasks print at once), and what the tasks themselves log.
KFP_OUTPUT = [
    "10:48:11.832 - INFO - Executing task \x1b[96m'finetune'\x1b[0m",
    "10:48:11.840 - INFO - Executing task \x1b[96m'finetune'\x1b[0m",
    "    [KFP Executor 2026-12-02 10:48:19,081 INFO]: Created temporary directory '/tmp/tmpa' for ephemeral docs site",
    "    [KFP Executor 2026-12-02 10:48:19,500 WARNING]: Matplotlib is building the font cache; this may take a moment.",
    "        [KFP Executor 2026-12-02 10:49:13,012 INFO]: base: step 1/6, loss 1.5976, 12.3 samples/s, ETA 0:50",
    "            [KFP Executor 2026-12-02 10:49:14,306 INFO]: higher-lr: step 1/6, loss 1.5976, 11.9 samples/s, ETA 0:52",
    "    [KFP Executor 2026-12-02 10:49:33,953 INFO]: base: eval step 3: train loss 1.6019, accuracy 0.2333",
    "    [KFP Executor 2026-12-02 10:50:06,305 INFO]: base: step 6/6, loss 1.5906, 15.0 samples/s, ETA 0:00",
    "    [KFP Executor 2026-12-02 10:50:06,714 INFO]: higher-lr: step 6/6, loss 1.5562, 14.2 samples/s, ETA 0:00",
    "10:51:21.612 - INFO - Task \x1b[96m'finetune'\x1b[0m finished with status \x1b[92mSUCCESS\x1b[0m",
]


def _feed(step_log: _StepLogFilter) -> None:
    # In pieces, as kfp.local prints: a line is handled once its newline arrives.
    text = "\n".join(KFP_OUTPUT) + "\n"
    for start in range(0, len(text), 37):
        step_log.write(text[start : start + 37])


def test_piped_output_gets_a_prefixed_progress_line_per_report_and_no_chatter(tmp_path: Path) -> None:
    log, terminal = io.StringIO(), io.StringIO()
    _feed(_StepLogFilter(log, terminal, verbose=False))
    shown = terminal.getvalue().splitlines()
    assert "\x1b" not in terminal.getvalue()  # not a terminal: no colours, no cursor movement
    assert not any("ephemeral docs site" in line or "font cache" in line for line in shown)
    progress = [line for line in shown if line.startswith("finetune ")]
    assert progress == [
        "finetune base  [###.................] 1/6  loss 1.5976  12.3 samples/s  ETA 0:50",
        "finetune higher-lr  [###.................] 1/6  loss 1.5976  11.9 samples/s  ETA 0:52",
        "finetune base  [####################] 6/6  loss 1.5906  15.0 samples/s  ETA 0:00",
        "finetune higher-lr  [####################] 6/6  loss 1.5562  14.2 samples/s  ETA 0:00",
    ]
    assert shown[0] == "10:48:11.832 - INFO - Executing task 'finetune'"
    assert any(line.startswith("[KFP Executor") and "base: eval step 3" in line for line in shown)
    # The log keeps every line, without colour codes.
    assert log.getvalue().splitlines() == [
        line.replace("\x1b[96m", "").replace("\x1b[92m", "").replace("\x1b[0m", "") for line in KFP_OUTPUT
    ]


ERASE_LINE_ABOVE = "\x1b[1A\x1b[2K"


def _screen(output: str) -> list[str]:
    """The lines a terminal shows after ``output``, for what the board writes: lines of text, and
    "cursor up one line, erase it", which takes back the line above."""
    screen: list[str] = []
    for part in re.split(f"({re.escape(ERASE_LINE_ABOVE)})", output.replace("\r", "")):
        if part == ERASE_LINE_ABOVE:
            screen.pop()
        else:
            screen += part.split("\n")[:-1]
    return screen


def test_on_a_terminal_each_candidate_has_one_line_redrawn_in_place() -> None:
    main, side = pty.openpty()
    # A 120-column terminal: the board cuts its lines to the width of the terminal it draws on.
    fcntl.ioctl(side, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    log = io.StringIO()
    with os.fdopen(side, "w", encoding="utf-8") as tty:
        step_log = _StepLogFilter(log, tty, verbose=False)
        assert step_log.board.live
        _feed(step_log)
    output = b""
    while chunk := _read_available(main):
        output += chunk
    os.close(main)
    screen = [line for line in _screen(output.decode()) if line.strip()]
    # Every report redrew the candidates' lines: the screen holds each candidate once, at its last report.
    progress = [line for line in screen if line.startswith("finetune ")]
    assert progress == [
        "finetune base       [####################] 6/6  loss 1.5906  15.0 samples/s  ETA 0:00",
        "finetune higher-lr  [####################] 6/6  loss 1.5562  14.2 samples/s  ETA 0:00",
    ]
    # Other lines went above them; the lines after the last report below (the finished bars stay).
    assert "base: eval step 3" in screen[2] and "finished with status" in screen[-1]
    assert "\x1b" not in log.getvalue()


def _read_available(fd: int) -> bytes:
    """What the terminal's other side has to read; nothing once it is drained (Linux: EIO, the writer gone)."""
    import select

    ready, _, _ = select.select([fd], [], [], 0)
    try:
        return os.read(fd, 65536) if ready else b""
    except OSError:
        return b""


def test_a_tagged_finetune_step_logs_progress_that_the_runner_reads(
    tokenized_small: Path, tiny_model: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from components.finetune.config import LoopConfig
    from components.finetune.finetune import train

    caplog.set_level(logging.INFO)
    config = LoopConfig(base_model=str(tiny_model), batch_size=8, max_steps=4, eval_every=0)
    with step("finetune", tag="cand-1"):
        train(tokenized_small, tmp_path / "model", config)
    reports = [r for r in map(parse, caplog.messages) if r is not None]
    assert [r.step for r in reports] == [1, 2, 3, 4]
    assert all(r.tag == "cand-1" and r.total == 4 and r.samples_per_second > 0 for r in reports)
    assert reports[0].eta_seconds is not None and reports[-1].eta_seconds == 0
    # Every line of the step carries the tag, the run's summary included; once the step ends, none.
    assert any(m.startswith("cand-1: trained 4 steps") for m in caplog.messages)
    logging.getLogger("bertops.test").info("after the step")
    assert caplog.messages[-1] == "after the step"


def test_the_progress_line_reads_back_as_written() -> None:
    written = TrainingProgress(30, 60, 0.8123, 41.7, 3725.4, tag="")
    assert written.message() == "step 30/60, loss 0.8123, 41.7 samples/s, ETA 1:02:05"
    assert parse(f"[KFP Executor x INFO]: base-2: {written.message()}") == TrainingProgress(
        30, 60, 0.8123, 41.7, 3725, tag="base-2"
    )
    assert parse("step 1/6, loss 1.6, 0.3 samples/s, ETA ?") == TrainingProgress(1, 6, 1.6, 0.3, None)
    assert parse("base: eval step 3: train loss 1.6019") is None
