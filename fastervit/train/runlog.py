"""What a run leaves behind besides checkpoints: CSV logs, TensorBoard events, its machine.

* ``steps.csv``: one row per optimizer step (``step, epoch, lr, loss, grad_norm``);
* ``epochs.csv``: one row per epoch (training loss, validation loss and top-1/top-5, also
  for the EMA weights when kept, and the epoch's wall time);
* ``tb/``: the same numbers as TensorBoard scalars, against the step, when the
  ``tensorboard`` package is installed (it is optional: the CSV files hold everything);
* :func:`environment`: the software and hardware a run used, recorded in ``run.json``.

A resumed run first drops whatever was logged after the checkpoint's step (work that the
checkpoint does not hold and that will be redone), then appends.
"""

import csv
import importlib.metadata
import logging
import os
import platform
import subprocess
from pathlib import Path

import torch

logger = logging.getLogger(__name__)

STEP_FIELDS = ("step", "epoch", "lr", "loss", "grad_norm")
EPOCH_FIELDS = (
    "epoch",
    "step",
    "train_loss",
    "val_loss",
    "top1",
    "top5",
    "ema_val_loss",
    "ema_top1",
    "ema_top5",
    "epoch_time_s",
)


def _truncate_csv(path: Path, fields: tuple[str, ...], last_step: int) -> None:
    """Rewrite ``path`` with its header and the rows whose ``step`` is at most ``last_step``."""
    with path.open(newline="") as f:
        rows = [row for row in csv.DictReader(f) if int(row["step"]) <= last_step]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)


def _summary_writer(log_dir: Path, purge_step: int | None):
    """A TensorBoard ``SummaryWriter``, or None when the ``tensorboard`` package is missing."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        logger.info("tensorboard is not installed: no %s events (the CSV logs hold the same)", log_dir)
        return None
    return SummaryWriter(log_dir=str(log_dir), purge_step=purge_step)


class RunLog:
    """Append-only CSV (and TensorBoard) logs of one run in ``output``.

    Args:
        output: the run directory.
        resume_step: the step of the checkpoint being resumed, or None for a new run.
    """

    def __init__(self, output: Path, resume_step: int | None = None) -> None:
        output.mkdir(parents=True, exist_ok=True)
        self.files = {"steps": output / "steps.csv", "epochs": output / "epochs.csv"}
        fields = {"steps": STEP_FIELDS, "epochs": EPOCH_FIELDS}
        for key, path in self.files.items():
            if resume_step is not None and path.exists():
                _truncate_csv(path, fields[key], resume_step)
            else:
                with path.open("w", newline="") as f:
                    csv.DictWriter(f, fieldnames=fields[key]).writeheader()
        self.fields = fields
        purge_step = None if resume_step is None else resume_step + 1
        self.writer = _summary_writer(output / "tb", purge_step)

    def _append(self, key: str, row: dict) -> None:
        with self.files[key].open("a", newline="") as f:
            csv.DictWriter(f, fieldnames=self.fields[key]).writerow(row)

    def log_step(self, row: dict) -> None:
        """One optimizer step: a dict with :data:`STEP_FIELDS`."""
        self._append("steps", row)
        if self.writer is None:
            return
        for name in ("lr", "loss", "grad_norm"):
            self.writer.add_scalar(f"train/{name}", row[name], row["step"])

    def log_epoch(self, row: dict) -> None:
        """One finished epoch: a dict with :data:`EPOCH_FIELDS` (None where not measured)."""
        self._append("epochs", row)
        if self.writer is None:
            return
        for name in EPOCH_FIELDS[2:]:
            if row[name] is not None:
                self.writer.add_scalar(f"epoch/{name}", row[name], row["step"])
        self.writer.flush()

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()


def _nvidia_smi() -> str | None:
    """The GPUs' name, driver, memory, clock and power limit, as nvidia-smi reports them."""
    query = "name,driver_version,memory.total,clocks.max.sm,power.limit"
    try:
        result = subprocess.run(
            ["nvidia-smi", f"--query-gpu={query}", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return result.stdout.strip()


def _cpu_model() -> str:
    """The CPU's marketing name (``/proc/cpuinfo`` on Linux), else what ``platform`` knows."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _source_commit() -> str | None:
    """The git commit of the checkout the package runs from, ``+dirty`` with local changes.

    None when the package is not in a git checkout (an installed wheel, say).
    """
    root = Path(__file__).resolve().parents[2]
    try:
        commit = subprocess.run(
            ["git", "-C", str(root), "rev-parse", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
        status = subprocess.run(
            ["git", "-C", str(root), "status", "--porcelain", "--untracked-files=no", "--", "fastervit"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return commit + ("+dirty" if status else "")


def environment(device: torch.device) -> dict:
    """The software and hardware a run on ``device`` uses: versions, CPU, GPU and driver."""
    versions = {}
    for package in ("numpy", "tensorboard", "fvcore", "timm"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    record = {
        "device": str(device),
        "python": platform.python_version(),
        "torch": torch.__version__,
        **versions,
        "platform": platform.platform(),
        "cpu": _cpu_model(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "commit": _source_commit(),
    }
    if device.type == "cuda":
        properties = torch.cuda.get_device_properties(device)
        record |= {
            "gpu": properties.name,
            "gpu_memory_gib": round(properties.total_memory / 2**30, 1),
            "gpu_count": torch.cuda.device_count(),
            "cuda": torch.version.cuda,
            "cudnn": torch.backends.cudnn.version(),
            "nvidia_smi": _nvidia_smi(),
        }
    return record
