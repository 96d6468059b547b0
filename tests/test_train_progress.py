"""The progress bar callback of the training loop."""

import io

import pytest
from tqdm import tqdm

from fastervit.train.progress import ProgressBar, disabled_by_environment


def drive(bar: ProgressBar) -> None:
    bar("start", {"total_steps": 3})
    for step in (1, 2, 3):
        bar("step", {"step": step, "epoch": 0, "loss": 1.0 / step, "lr": 1e-3})
    bar("epoch", {"epoch": 0})  # other events leave the bar alone
    bar.close()


def test_the_bar_follows_the_steps(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    out = io.StringIO()
    bar = ProgressBar(tqdm, file=out, mininterval=0)
    drive(bar)
    assert (bar.bar.n, bar.bar.total) == (3, 3)
    assert "3/3" in out.getvalue() and "loss=0.3333" in out.getvalue()


def test_tqdm_disable_in_the_environment_turns_it_off_for_any_bar_class(monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    seen = {}

    def bar_class(**options):  # like tqdm.notebook, which passes disable=False explicitly
        seen.update(options)
        return tqdm(**{**options, "file": io.StringIO()})

    drive(ProgressBar(bar_class))
    assert seen["disable"] is True


def test_records_with_only_some_fields_drive_it_too(monkeypatch):
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    out = io.StringIO()
    bar = ProgressBar(tqdm, file=out, mininterval=0)
    bar("start", {"total_steps": 4})
    bar("step", {"step": 2, "loss": 0.5})  # the segmentation run's progress record
    bar.close()
    assert "2/4" in out.getvalue() and "loss=0.5000" in out.getvalue() and "lr=" not in out.getvalue()


@pytest.mark.parametrize(
    ("value", "disabled"), [(None, False), ("", False), ("0", False), ("1", True), ("True", True)]
)
def test_disabled_by_environment_reads_tqdm_disable(monkeypatch, value, disabled):
    if value is None:
        monkeypatch.delenv("TQDM_DISABLE", raising=False)
    else:
        monkeypatch.setenv("TQDM_DISABLE", value)
    assert disabled_by_environment() is disabled
