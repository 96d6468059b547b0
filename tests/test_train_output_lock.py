"""One run per output folder: a live holder refuses others (two real processes), a dead one's
lock is taken over, and only the holder releases."""

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from fastervit.commands.cli import main
from fastervit.train.output_lock import LOCK_NAME, OutputLockedError, acquire, output_lock, release

TINY = (
    '{"dim": 16, "in_dim": 8, "depths": [1, 1, 1, 1], "num_heads": [1, 2, 2, 4], "window_size": [2, 2, 2, 1]}'
)

# Holds the lock of the folder given as argument until its stdin closes.
HOLDER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from fastervit.train.output_lock import output_lock

    with output_lock(Path(sys.argv[1])):
        print("locked", flush=True)
        sys.stdin.read()
    """
)


def _train_argv(output):
    return [
        "train", "--model", "faster_vit_0_224", "--model-kwargs", TINY, "--dataset", "digits",
        "--epochs", "1", "-b", "128", "--warmup-epochs", "0.1", "--max-steps", "1", "-j", "0",
        "--output", str(output),
    ]  # fmt: skip


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_second_process_is_refused_while_the_first_holds_the_folder(tmp_path, capsys):
    output = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(output)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        # The second process: the train command, in another process.
        result = subprocess.run(
            [sys.executable, "-m", "fastervit", *_train_argv(output)],
            check=False,
            capture_output=True,
            text=True,
            timeout=300,
        )
        record = json.loads(result.stdout.strip().splitlines()[-1])
        assert result.returncode == 1 and record["error_type"] == "OutputLockedError"
        assert f"process {holder.pid} on host {socket.gethostname()}" in record["error"]
        assert "choose another --output" in record["error"]
        assert not (output / "steps.csv").exists()  # refused before any work
    finally:
        holder.stdin.close()
        holder.wait(timeout=60)
    assert not (output / LOCK_NAME).exists()  # released on exit
    assert main(_train_argv(output)) == 0  # the folder is free again
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["steps"] == 1


def test_the_lock_of_a_killed_process_is_taken_over(tmp_path, caplog):
    output = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(output)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert holder.stdout.readline().strip() == "locked"
    holder.send_signal(signal.SIGKILL)  # no chance to release
    holder.wait(timeout=60)
    assert json.loads((output / LOCK_NAME).read_text())["pid"] == holder.pid
    with output_lock(output) as path:
        assert json.loads(path.read_text())["pid"] == os.getpid()
    assert f"process {holder.pid}" in caplog.text and "no longer running" in caplog.text
    assert not path.exists()


def test_a_lock_from_another_host_or_a_live_process_is_respected(tmp_path):
    path = tmp_path / LOCK_NAME
    path.write_text(json.dumps({"pid": _dead_pid(), "host": "elsewhere", "started": time.time()}))
    with pytest.raises(
        OutputLockedError, match=r"on host elsewhere .*if that run is no longer running.*delete"
    ):
        acquire(tmp_path)
    path.write_text(json.dumps({"pid": os.getppid(), "host": socket.gethostname()}))  # alive
    with pytest.raises(OutputLockedError) as error:
        acquire(tmp_path)
    assert error.value.holder["pid"] == os.getppid()


def test_a_file_that_is_no_lock_of_ours_is_replaced(tmp_path):
    (tmp_path / LOCK_NAME).write_text("not json")
    path = acquire(tmp_path)
    assert json.loads(path.read_text())["pid"] == os.getpid()
    release(path)
    assert not path.exists()


def test_release_leaves_another_holders_lock_and_the_lock_goes_on_errors(tmp_path):
    other = {"pid": 12345, "host": "elsewhere"}
    path = tmp_path / LOCK_NAME
    path.write_text(json.dumps(other))
    release(path)
    assert json.loads(path.read_text()) == other
    path.unlink()
    with pytest.raises(RuntimeError, match="boom"), output_lock(tmp_path):
        raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # no lock, no private temporary file
