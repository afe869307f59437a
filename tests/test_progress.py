"""Progress bars (onnxfold.report.progress): drawn by tqdm on a terminal, never on a stderr that is not a
terminal, never with ``TQDM_DISABLE`` set; shown for clustering, saving and repair synthesis."""

from __future__ import annotations

import io
import re
import sys
from pathlib import Path

import pytest

import onnxfold
import onnxfold.report.progress as progress
from onnxfold.models import bundled_model


class Terminal(io.StringIO):
    """A stderr that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def fold_and_save(tmp_path: Path) -> None:
    model, _ = onnxfold.fold(bundled_model("lenet5.onnx"), 0.5, validate=False, repair="none")
    onnxfold.save_model(model, tmp_path / "o.onnx", external_data=True)


@pytest.fixture
def no_delay(monkeypatch):
    monkeypatch.setattr(progress, "DELAY_S", 0.0)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)


def test_bars_are_drawn_on_a_terminal(tmp_path: Path, monkeypatch, no_delay) -> None:
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    fold_and_save(tmp_path)
    text = stream.getvalue()
    assert "clustering" in text and "group" in text
    assert "saving o.onnx.data" in text and "tensor" in text


def test_a_search_shows_its_sensitivity_analysis_and_its_candidates(
    tmp_path: Path, monkeypatch, no_delay
) -> None:
    stream = Terminal()
    monkeypatch.setattr(sys, "stderr", stream)
    onnxfold.fold(bundled_model("lenet5.onnx"), validate=False, method="fold", target_params=0.2)
    text = stream.getvalue()
    assert "sensitivity" in text and "group" in text
    assert "candidates" in text and "tried " in text and "fewer params: " in text


@pytest.mark.parametrize("stderr", ["pipe", "tqdm_disable"])
def test_no_bar_off_a_terminal_or_with_tqdm_disable(
    stderr: str, tmp_path: Path, monkeypatch, no_delay
) -> None:
    stream = io.StringIO() if stderr == "pipe" else Terminal()
    if stderr == "tqdm_disable":
        monkeypatch.setenv("TQDM_DISABLE", "1")
    monkeypatch.setattr(sys, "stderr", stream)
    fold_and_save(tmp_path)
    assert stream.getvalue() == ""


def test_cli_writes_no_bar_to_a_pipe(tmp_path: Path, capfd) -> None:
    """The real CLI with stderr captured (not a terminal): its stderr holds no bar, not even a ``\\r``."""
    from onnxfold.cli.commands import main

    rc = main(["fold", str(bundled_model("lenet5.onnx")), "-o", str(tmp_path / "o.onnx"), "--no-validate"])
    assert rc == 0
    err = capfd.readouterr().err
    assert "\r" not in err and "clustering" not in err


def test_tqdm_disable_values() -> None:
    for value, off in [("", False), ("0", False), ("false", False), ("1", True), ("True", True)]:
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("TQDM_DISABLE", value)
            assert progress.disabled_by_env() is off, value


def test_off_a_terminal_a_long_step_writes_plain_lines(tmp_path: Path, monkeypatch) -> None:
    """A log or a pipe gets one plain line per :data:`~onnxfold.report.progress.LOG_EVERY_S` of a long
    step (here made 0 s long), each starting ``onnxfold:``, with no carriage return; a default fold of
    DNSMOS sat silent in a log for 5 minutes."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    onnxfold.fold(bundled_model("lenet5.onnx"), validate=False, method="fold", target_params=0.2)
    text = stream.getvalue()
    lines = text.splitlines()
    assert "\r" not in text and lines and all(line.startswith("onnxfold: ") for line in lines)
    assert any(line.startswith("onnxfold: sensitivity: ") and " group levels [" in line for line in lines)
    assert any(line.startswith("onnxfold: candidates: ") and "fewer params: " in line for line in lines)
    assert len(lines) == len(set(lines))  # a step's end does not repeat its last line


def test_auto_at_a_fixed_sparsity_shows_its_judging(tmp_path: Path, monkeypatch) -> None:
    """``-s R`` with ``--method auto`` judges every group's candidates; U2-Net's 101 groups took 13
    minutes with no line in a log. A search's candidates judge under the search's own bar."""
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    _, report = onnxfold.fold(bundled_model("lenet5.onnx"), 0.5, validate=False, method="auto")
    lines = stream.getvalue().splitlines()
    assert any(line.startswith("onnxfold: auto: judging: ") and " groups [" in line for line in lines), lines
    # counted against the groups that fold (trial 89 read "51 groups" of a model with 30 foldable ones,
    # SCRFD "1/40 groups" with 31 that fold), and to its end
    groups = sum(p.status == "folded" for p in report.plans)
    assert 0 < groups < len(onnxfold.analyze(bundled_model("lenet5.onnx")))
    assert any(re.search(rf"judging: {groups}/{groups} groups \[", line) for line in lines), lines
    stream.truncate(0)
    onnxfold.fold(bundled_model("lenet5.onnx"), validate=False, method="auto", target_params=0.2)
    assert "auto: judging" not in stream.getvalue()


def test_a_logged_step_of_known_length_says_how_long_it_has_left(monkeypatch) -> None:
    """A trial stopped an auto fold of a YOLOX at "auto: judging: 3/67 groups [01:00]", with no way to
    tell it had 20 minutes to go: a line of a step whose length is known gives the time left at its
    rate so far, and none before a rate is known (no "?"), once it is done, nor where the length is
    not known."""
    import time

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in progress.progress_bar(range(4), desc="auto: judging", unit="group"):
        time.sleep(0.05)
    with progress.progress_bar(desc="candidates", unit="candidate") as bar:
        bar.update(1)
    lines = stream.getvalue().splitlines()
    assert "?" not in stream.getvalue() and lines[0] == "onnxfold: auto: judging: 0/4 groups [00:00]"
    assert all(
        re.fullmatch(rf"onnxfold: auto: judging: {n}/4 groups \[00:00, about 00:0\d left\]", line)
        for n, line in zip(range(1, 4), lines[1:4], strict=True)
    ), lines
    assert lines[4] == "onnxfold: auto: judging: 4/4 groups [00:00]"  # done: nothing left to tell
    assert lines[-1] == "onnxfold: candidates: 1 candidates [00:00]"


def test_a_step_the_time_limit_will_cut_says_when_it_cuts_it(monkeypatch) -> None:
    """A YOLOX's sensitivity read "about 1:04:36 left" with 3 minutes of its share of the time limit to
    go (trial 204 read its "about 04:22 left" end 16 s later): where the rate would run past the
    deadline, the line gives the deadline."""
    import time

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.setattr(progress, "LOG_EVERY_S", 0.0)
    stream = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stream)
    for _ in progress.progress_bar(range(100), desc="sensitivity", unit="level", deadline=lambda: 150.0):
        time.sleep(0.01)  # 100 levels at 0.01 s: under a second, well within the 150 s
        if stream.getvalue().count("\n") >= 3:
            break
    for _ in progress.progress_bar(range(4000), desc="slow", unit="level", deadline=lambda: 150.0):
        time.sleep(0.01)  # 4000 levels at 0.01 s: 40 s, still within it
        if stream.getvalue().count("\n") >= 8:
            break
    for _ in progress.progress_bar(range(10**6), desc="cut", unit="level", deadline=lambda: 150.0):
        time.sleep(0.01)  # 10^6 levels at 0.01 s: hours, past the 150 s
        if stream.getvalue().count("\n") >= 12:
            break
    lines = stream.getvalue().splitlines()
    assert all(
        "before the time limit" not in line for line in lines if ": slow:" in line or "sensitivity" in line
    )
    cut = [line for line in lines if ": cut:" in line and "left" in line]
    assert cut and all(line.endswith("about 02:30 left before the time limit cuts it]") for line in cut), cut
