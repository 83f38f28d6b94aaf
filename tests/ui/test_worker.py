"""WorkerProcess against the fake worker: event parsing, stop, the kill backstop, start failures."""

from __future__ import annotations

from studio import protocol
from ui.worker import WorkerProcess
from uifixtures import *  # noqa: F403 (pytest fixtures)


def collect(worker: WorkerProcess) -> tuple[list, list]:
    events, logs = [], []
    worker.event_received.connect(events.append)
    worker.log_received.connect(logs.append)
    return events, logs


def test_events_arrive_in_order_and_stray_output_becomes_log(qtbot, fake_worker, tmp_path):
    fake_worker.mode = "noisy"
    worker = fake_worker()
    events, logs = collect(worker)
    with qtbot.waitSignal(worker.finished, timeout=30000) as finished:
        worker.start_train(tmp_path, tmp_path / "run")
    assert finished.args == [0, False]
    names = [e.name for e in events]
    assert names[0] == "hello" and names[-1] == "done"
    steps = [e.step for e in events if isinstance(e, protocol.Progress)]
    assert steps[:2] == [1, 1]  # the line that arrived in two pieces was parsed whole
    assert steps[-1] == fake_worker.steps
    assert "a stray print on stdout" in logs  # shown as log text, never a crash
    assert any("CPU thread" in line for line in logs)  # stderr goes to the log too
    assert not worker.is_running()


def test_an_event_with_a_renamed_field_is_reported_not_defaulted(qtbot, fake_worker, tmp_path):
    fake_worker.mode, fake_worker.steps = "drift", 3
    worker = fake_worker()
    events, logs = collect(worker)
    with qtbot.waitSignal(worker.finished, timeout=30000):
        worker.start_train(tmp_path, tmp_path / "run")
    drifted = [line for line in logs if line.startswith("Protocol error")]
    assert len(drifted) == 1 and "unknown field(s) 'stp'" in drifted[0]
    # The line did not become a progress event at step 0: only the three real steps arrived.
    assert [e.step for e in events if isinstance(e, protocol.Progress)] == [1, 2, 3]


def test_every_phase_has_a_heading_in_the_run_panel():
    from ui.run_panel import PHASE_TEXT

    assert set(PHASE_TEXT) == set(protocol.PHASES)


def test_stop_sends_the_command_and_the_worker_saves(qtbot, fake_worker, tmp_path):
    fake_worker.steps, fake_worker.delay = 500, 0.02
    worker = fake_worker()
    events, _ = collect(worker)
    worker.start_train(tmp_path, tmp_path / "run")
    qtbot.waitUntil(lambda: any(isinstance(e, protocol.Progress) for e in events), timeout=20000)
    with qtbot.waitSignal(worker.finished, timeout=20000) as finished:
        worker.stop()
    assert finished.args == [0, False] and not worker.killed
    assert fake_worker.commands()[0] == protocol.command("stop")
    done = [e for e in events if isinstance(e, protocol.Done)][0]
    assert done.stopped and done.step < 500


def test_a_hung_worker_is_killed_after_the_grace_period(qtbot, fake_worker, tmp_path):
    fake_worker.mode, fake_worker.grace_ms = "hang", 400
    worker = fake_worker()
    events, logs = collect(worker)
    worker.start_train(tmp_path, tmp_path / "run")
    qtbot.waitUntil(lambda: sum(isinstance(e, protocol.Progress) for e in events) >= 3,
                    timeout=20000)
    with qtbot.waitSignal(worker.finished, timeout=20000) as finished:
        worker.stop()
    assert finished.args == [-9, True] and worker.killed
    assert protocol.command("stop") in fake_worker.commands()  # it was asked first
    assert any("killing it" in line for line in logs)


def test_a_crash_keeps_the_end_of_stderr(qtbot, fake_worker, tmp_path):
    fake_worker.mode = "crash"
    worker = fake_worker()
    with qtbot.waitSignal(worker.finished, timeout=20000) as finished:
        worker.start_train(tmp_path, tmp_path / "run")
    assert finished.args[0] == 134
    assert "CUDA out of memory" in worker.stderr_text()


def test_a_worker_that_cannot_start_is_reported(qtbot, tmp_path):
    worker = WorkerProcess([str(tmp_path / "no-such-python")])
    with qtbot.waitSignal(worker.finished, timeout=10000) as finished:
        worker.start_train(tmp_path)
    assert finished.args == [-1, True]
    assert "Could not start" in worker.stderr_text()
