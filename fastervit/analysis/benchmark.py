"""Throughput and latency (chapter 9): timing a forward pass so that the numbers mean something.

The method, for every model and setting:

* inference only: ``model.eval()`` and :func:`torch.inference_mode` (no autograd, and
  FasterViT's position MLPs served from its cache);
* ``warmup`` untimed batches first: they pay for lazy initialisation, cuDNN/oneDNN algorithm
  selection, the caches, and ``torch.compile``'s compilation;
* each of ``iters`` batches timed on its own: on CUDA by events recorded on the stream around
  the forward (GPU time, no host round trip inside the loop; one synchronisation at the end),
  on CPU by :func:`time.perf_counter`;
* the median batch time (robust to a stray slow batch) and the inter-quartile range as the
  spread; throughput ``batch_size / median``;
* batch 128 measures throughput (the GPU kept busy), batch 1 latency (one image's wait);
* ratios (a setting's speed-up, one model against another) come from one process, with the
  contenders measured in alternation, so that clocks, temperature and neighbours affect
  them alike.
"""

import importlib
import math
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
from torch import nn

from fastervit.analysis.counting import analytic_report, flop_analysis
from fastervit.variants import create_model, list_models

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# The ImageNet-1K FasterViTs, smallest first: what ``--model all`` measures.
FASTERVIT_FAMILY = tuple(f"faster_vit_{i}_224" for i in range(7))
# Peers of comparable accuracy, as timm names them, with torchvision's equivalent where it
# has one; built with random weights (nothing is downloaded).
PEERS = {
    "swin_tiny_patch4_window7_224": "swin_t",
    "convnext_tiny": "convnext_tiny",
    "deit_small_patch16_224": None,
    "efficientnetv2_rw_s": "efficientnet_v2_s",
}


@dataclass(frozen=True)
class BenchSettings:
    """How a model is run: batch, input size, device, precision, memory format, compilation."""

    batch_size: int = 128
    resolution: tuple[int, int] = (224, 224)
    device: str = "cuda"
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    warmup: int = 10
    iters: int = 50

    def label(self) -> str:
        parts = [self.amp or "fp32"]
        parts += ["channels_last"] if self.channels_last else []
        parts += ["compile"] if self.compile else []
        return "+".join(parts)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batches(run: Callable[[], Any], iters: int, device: torch.device) -> list[float]:
    """Milliseconds of each of ``iters`` calls of ``run``, measured on the device's clock."""
    if device.type == "cuda":
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(iters)
        ]
        for start, end in events:
            start.record()
            run()
            end.record()
        torch.cuda.synchronize(device)
        return [start.elapsed_time(end) for start, end in events]
    times = []
    for _ in range(iters):
        start = time.perf_counter()
        run()
        times.append((time.perf_counter() - start) * 1e3)
    return times


def summarise(times_ms: Sequence[float], batch_size: int) -> dict[str, float]:
    """Median, quartiles and spread of batch times, and the throughput they imply."""
    q25, median, q75 = (
        statistics.quantiles(times_ms, n=4, method="inclusive") if len(times_ms) > 1 else [times_ms[0]] * 3
    )
    return {
        "images_per_s": batch_size / (median / 1e3),
        "ms_per_batch_median": median,
        "ms_per_batch_iqr": q75 - q25,
        "ms_per_batch_q25": q25,
        "ms_per_batch_q75": q75,
        "ms_per_batch_min": min(times_ms),
    }


def peak_memory_mb(device: torch.device, baseline: int = 0) -> tuple[float | None, str]:
    """CUDA: the most memory tensors held since the last reset, less ``baseline`` bytes (what
    other models held before); CPU: the process's peak resident set size."""
    if device.type == "cuda":
        return (torch.cuda.max_memory_allocated(device) - baseline) / 2**20, "cuda_max_allocated"
    if sys.platform.startswith("linux"):
        import resource  # Unix only

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "cpu_process_peak_rss"
    return None, "unavailable"


def _reset_memory(device: str) -> int:
    """Start a new CUDA peak; return the bytes already held (by models built before)."""
    if torch.device(device).type != "cuda":
        return 0
    torch.cuda.reset_peak_memory_stats(device)
    return torch.cuda.memory_allocated(device)


class Runner:
    """One model prepared for timing under one :class:`BenchSettings`."""

    def __init__(self, model: nn.Module, settings: BenchSettings, in_chans: int = 3) -> None:
        self.settings = settings
        self.device = torch.device(settings.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # pick the fastest conv kernels during warm-up
        memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
        model = model.eval().to(self.device, memory_format=memory_format)
        self.model = torch.compile(model) if settings.compile else model
        self.inputs = torch.randn(settings.batch_size, in_chans, *settings.resolution, device=self.device)
        self.inputs = self.inputs.contiguous(memory_format=memory_format)
        dtype = AMP_DTYPES.get(settings.amp)
        self.autocast = torch.autocast(self.device.type, dtype=dtype) if dtype is not None else nullcontext()
        self.warmup_s: float | None = None

    def step(self) -> torch.Tensor:
        with torch.inference_mode(), self.autocast:
            return self.model(self.inputs)

    def warm_up(self) -> None:
        start = time.perf_counter()
        for _ in range(max(self.settings.warmup, 1)):
            self.step()
        synchronize(self.device)
        self.warmup_s = time.perf_counter() - start

    def time(self, iters: int | None = None) -> list[float]:
        return time_batches(self.step, iters or self.settings.iters, self.device)


def build_model(name: str) -> tuple[nn.Module, str]:
    """A FasterViT, or a peer from timm (else torchvision), with random weights.

    Returns the model and where it came from; raises ``ModuleNotFoundError`` naming what to
    install when no library provides ``name``.
    """
    if name in list_models():
        return create_model(name), "fastervit"
    if name in PEERS:
        try:
            timm = importlib.import_module("timm")
            return timm.create_model(name, pretrained=False), "timm"
        except ModuleNotFoundError:
            pass
        if PEERS[name] is not None:
            try:
                models = importlib.import_module("torchvision.models")
                return getattr(models, PEERS[name])(weights=None), "torchvision"
            except ModuleNotFoundError:
                pass
        needs = "timm" + (" or torchvision" if PEERS[name] else "")
        raise ModuleNotFoundError(f"peer model {name!r} needs {needs}, which is not installed; skipped")
    raise KeyError(
        f"unknown model {name!r}: a FasterViT from fastervit.list_models() or a peer in {list(PEERS)}"
    )


def model_gmacs(
    name: str, model: nn.Module, resolution: tuple[int, int]
) -> tuple[float | None, float | None]:
    """GMACs per image (uncached, cached position bias): formulas for FasterViT, fvcore for peers."""
    if name in list_models():
        report = analytic_report(name, resolution)
        return report.gmacs, report.gmacs_cached_bias
    try:
        analysis = flop_analysis(model.cpu().eval(), torch.zeros(1, 3, *resolution))
        gmacs = analysis.total() / 1e9
        return gmacs, gmacs
    except (RuntimeError, TypeError, ValueError, AssertionError) as error:  # fvcore cannot trace every model
        print(f"no FLOP count for {name}: {type(error).__name__}: {error}", file=sys.stderr)
        return None, None


def environment(device: torch.device) -> dict[str, Any]:
    info = {
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "device": device.type,
        "cpu_threads": torch.get_num_threads(),
    }
    if device.type == "cuda":
        info["device_name"] = torch.cuda.get_device_name(device)
        info["cuda_version"] = torch.version.cuda
    else:
        info["device_name"] = platform.processor() or platform.machine()
    return info


@dataclass
class _Prepared:
    """A model built, moved, warmed up, with what its records need."""

    name: str
    source: str
    params: int
    gmacs: tuple[float | None, float | None]
    runner: Runner
    memory: tuple[float | None, str]


def _prepare(name: str, settings: BenchSettings, log: Callable[[str], None]) -> _Prepared:
    model, source = build_model(name)
    params = sum(p.numel() for p in model.parameters())
    gmacs = model_gmacs(name, model, settings.resolution)
    baseline = _reset_memory(settings.device)
    runner = Runner(model, settings, in_chans=getattr(model, "in_chans", 3))
    runner.warm_up()
    memory = peak_memory_mb(runner.device, baseline)  # weights and the warm-up's activations
    log(f"built {name} ({source}) [{settings.label()}], warm-up {runner.warmup_s:.1f} s")
    return _Prepared(name, source, params, gmacs, runner, memory)


def _record(prepared: _Prepared, times: list[float], peak_tflops: float | None) -> dict[str, Any]:
    settings = prepared.runner.settings
    stats = summarise(times, settings.batch_size)
    record = {
        "model": prepared.name,
        "source": prepared.source,
        "params": prepared.params,
        "batch_size": settings.batch_size,
        "mode": "latency" if settings.batch_size == 1 else "throughput",
        **stats,
        "timed_batches": len(times),
        "peak_memory_mb": prepared.memory[0],
        "memory_kind": prepared.memory[1],
        "gmacs": prepared.gmacs[0],
        "gmacs_cached_bias": prepared.gmacs[1],
        "warmup_s": prepared.runner.warmup_s,
        "settings": {**asdict(settings), "resolution": list(settings.resolution), "label": settings.label()},
        **environment(prepared.runner.device),
    }
    # The work done per image in inference is the cached-bias count (position MLPs not rerun).
    if prepared.gmacs[1] is not None:
        tflops = 2 * prepared.gmacs[1] * 1e9 * stats["images_per_s"] / 1e12
        record["achieved_tflops"] = tflops
        if peak_tflops:
            record["peak_tflops"] = peak_tflops
            record["mfu"] = tflops / peak_tflops
    return record


def _time_alternating(prepared: Sequence[_Prepared], rounds: int) -> list[list[float]]:
    """``rounds`` rounds, each timing every model for its share of ``iters`` batches in turn."""
    times: list[list[float]] = [[] for _ in prepared]
    for _ in range(rounds):
        for i, p in enumerate(prepared):
            times[i] += p.runner.time(max(1, math.ceil(p.runner.settings.iters / rounds)))
    return times


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


def benchmark(
    names: Iterable[str],
    settings: BenchSettings,
    rounds: int = 1,
    peak_tflops: float | None = None,
    log: Callable[[str], None] = _stderr,
) -> list[dict[str, Any]]:
    """Time several models under the same settings, side by side in this process.

    Every model is built and warmed up first; then, in each of ``rounds`` rounds, every model
    is timed for its share of ``settings.iters`` batches in turn, so that drifts of the
    machine hit all of them alike. Models whose library is missing are skipped with a
    message, and a record saying so.
    """
    prepared, skipped = [], []
    for name in names:
        try:
            prepared.append(_prepare(name, settings, log))
        except ModuleNotFoundError as error:
            log(f"skip: {error}")
            skipped.append({"model": name, "status": "skipped", "reason": str(error)})
    records = [_record(p, t, peak_tflops) for p, t in zip(prepared, _time_alternating(prepared, rounds))]
    for r in records:
        log(f"{r['model']}: {r['images_per_s']:.1f} img/s, {r['ms_per_batch_median']:.2f} ms/batch")
    return records + skipped


def compare_settings(
    name: str,
    variants: Sequence[BenchSettings],
    rounds: int = 5,
    peak_tflops: float | None = None,
    log: Callable[[str], None] = _stderr,
) -> list[dict[str, Any]]:
    """One model under several settings, timed in alternation; speed-ups against the first."""
    prepared = [_prepare(name, settings, log) for settings in variants]
    records = [_record(p, t, peak_tflops) for p, t in zip(prepared, _time_alternating(prepared, rounds))]
    for r in records:
        r["speedup_vs_first"] = r["images_per_s"] / records[0]["images_per_s"]
        log(f"{name} [{r['settings']['label']}]: {r['images_per_s']:.1f} img/s, x{r['speedup_vs_first']:.2f}")
    return records


def ablation_settings(settings: BenchSettings) -> list[BenchSettings]:
    """Baseline, channels_last, torch.compile, and both, from the same batch, size and precision."""
    base = replace(settings, channels_last=False, compile=False)
    return [
        base,
        replace(base, channels_last=True),
        replace(base, compile=True),
        replace(base, channels_last=True, compile=True),
    ]
