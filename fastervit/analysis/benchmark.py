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
  spread; throughput ``batch_size / median``; latency is the median time of a batch of 1,
  measured in the same rounds;
* ratios (a setting's speed-up, one model against another) come from one process, with the
  contenders measured in alternation, so that clocks, temperature and neighbours affect
  them alike.

A setting is either a plain run (precision by autocast, memory format, ``torch.compile``:
any model, peers included) or, for FasterViT, the deploy path of :mod:`fastervit.deploy`
with some of its optimisations, or the model exported to ONNX and run by ONNX Runtime.
Every FasterViT setting other than float32 eager also reports its *agreement* with float32
eager on :func:`reference_images`: top-1 agreement and the largest logit difference.
"""

import copy
import functools
import importlib
import importlib.util
import math
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastervit import peers as package_peers
from fastervit.analysis.counting import analytic_report, flop_analysis
from fastervit.deploy import EAGER, DeployOptions, ablation_options, cpu_flags, deploy, native_bf16
from fastervit.export import export_onnx, onnx_runner
from fastervit.variants import create_model, list_models

AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
RUNTIMES = ("torch", "onnxruntime")
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
# Instruction-set extensions that decide CPU speed, as machine_info reports them; each with
# the spellings of torch.cpu.get_capabilities and of /proc/cpuinfo.
ISA_FLAGS = {
    "avx2": ("avx2",),
    "fma": ("fma3", "fma"),
    "avx512f": ("avx512_f", "avx512f"),
    "avx512_vnni": ("avx512_vnni",),
    "avx512_bf16": ("avx512_bf16",),
    "avx512_fp16": ("avx512_fp16",),
    "amx_tile": ("amx_tile",),
    "amx_bf16": ("amx_bf16",),
    "neon": ("neon", "asimd"),
    "sve": ("sve",),
}
# The real photographs and textures that scikit-image ships (no download), for agreement.
SKIMAGE_IMAGES = (
    "astronaut",
    "chelsea",
    "coffee",
    "rocket",
    "immunohistochemistry",
    "hubble_deep_field",
    "colorwheel",
    "logo",
    "retina",
    "camera",
    "coins",
    "brick",
    "grass",
    "gravel",
)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class BenchSettings:
    """How a model is run: batch, input size, device, and the path it takes.

    ``amp``, ``channels_last`` and ``compile`` describe a plain run; ``deploy`` (FasterViT
    only) runs the model through :func:`fastervit.deploy.deploy` with those options instead;
    ``runtime="onnxruntime"`` runs the exported ONNX file. ``train`` times a training step
    instead of inference (forward, cross-entropy, backward and an AdamW step, under ``amp``
    as the training loop's autocast; no latency). ``name`` labels the setting.
    """

    batch_size: int = 128
    resolution: tuple[int, int] = (224, 224)
    device: str = "cuda"
    amp: str | None = None
    channels_last: bool = False
    compile: bool = False
    warmup: int = 10
    iters: int = 50
    deploy: DeployOptions | None = None
    runtime: str = "torch"
    train: bool = False
    name: str | None = None

    def __post_init__(self) -> None:
        for field_name in ("batch_size", "iters"):
            if getattr(self, field_name) < 1:
                raise ValueError(f"{field_name} must be at least 1, got {getattr(self, field_name)}")
        if self.warmup < 0:
            raise ValueError(f"warmup must be at least 0, got {self.warmup}")
        if self.runtime not in RUNTIMES:
            raise ValueError(f"runtime must be one of {RUNTIMES}, got {self.runtime!r}")
        if self.runtime == "onnxruntime" and torch.device(self.device).type != "cpu":
            raise ValueError("the ONNX Runtime peer runs on the CPU: use --device cpu")
        if self.train and (self.deploy is not None or self.runtime != "torch"):
            raise ValueError("a training step runs the model as trained: leave out --deploy and --runtime")

    def label(self) -> str:
        if self.name:
            return self.name
        if self.runtime == "onnxruntime":
            return "onnxruntime"
        if self.deploy is not None:
            default = asdict(DeployOptions())
            changed = [f"{k}={v}" for k, v in asdict(self.deploy).items() if v != default[k]]
            return f"deploy({', '.join(changed)})" if changed else "deploy"
        parts = [self.amp or "fp32"]
        parts += ["channels_last"] if self.channels_last else []
        parts += ["compile"] if self.compile else []
        parts += ["train"] if self.train else []
        return "+".join(parts)

    def record(self) -> dict[str, Any]:
        """JSON-ready: every field, the resolution as a list, and the label."""
        return {**asdict(self), "resolution": list(self.resolution), "label": self.label()}


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_batches(
    run: Callable[[], Any],
    iters: int,
    device: torch.device,
) -> list[float]:
    """Milliseconds of ``iters`` calls of ``run``, each on the device's clock.

    (Kept within 80 columns: chapter 9 prints this function.)
    """
    if device.type == "cuda":
        event = functools.partial(torch.cuda.Event, enable_timing=True)
        events = [(event(), event()) for _ in range(iters)]
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
    other models held before); CPU: the process's peak resident set size so far, which
    includes every model built before in the same process."""
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


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_info(device: torch.device | str = "cpu") -> dict[str, Any]:
    """What a measurement was made on: CPU model, cores, ISA extensions, threads, versions,
    and the GPU for ``device`` on CUDA. JSON-ready; the one description every benchmark uses."""
    device = torch.device(device)
    flags = cpu_flags()
    bf16, why = native_bf16("cpu")
    info: dict[str, Any] = {
        "cpu": _cpu_model(),
        "cpu_cores_logical": os.cpu_count(),
        "cpu_cores_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "isa": {name: any(flags.get(s, False) for s in spellings) for name, spellings in ISA_FLAGS.items()},
        "cpu_bf16_native": bf16,
        "cpu_bf16_reason": why,
        "aten_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "onednn": torch.backends.mkldnn.is_available(),
        "torch_threads": torch.get_num_threads(),
        "torch_version": torch.__version__,
        "python_version": platform.python_version(),
        "os": platform.platform(),
        "device": device.type,
    }
    if importlib.util.find_spec("onnxruntime") is not None:
        info["onnxruntime_version"] = importlib.import_module("onnxruntime").__version__
    if device.type == "cuda":
        index = device.index if device.index is not None else torch.cuda.current_device()
        info.update(
            gpu=torch.cuda.get_device_name(index),
            gpu_capability=".".join(map(str, torch.cuda.get_device_capability(index))),
            gpu_memory_gb=torch.cuda.get_device_properties(index).total_memory / 2**30,
            cuda_version=torch.version.cuda,
            cudnn_version=torch.backends.cudnn.version(),
            gpu_bf16_native=native_bf16(device)[0],
        )
    return info


def reference_images(resolution: tuple[int, int] = (224, 224)) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed set of real images for agreement checks: 8 views of each of scikit-image's 14
    shipped photographs and textures (no download).

    Views: the whole image and its centre at 70 % of the shorter side, each at two scales of
    the target size (centre-cropped), each also mirrored. Grey images are repeated over
    the three channels; values are normalised with the ImageNet mean and deviation.

    Returns:
        ``(images, labels)``: ``(112, 3, H, W)`` float32 and ``(112,)`` int64, the index of
        the source image (0-13) of each view.
    """
    try:
        from skimage import data
    except ModuleNotFoundError as error:
        raise ModuleNotFoundError(
            'agreement is measured on scikit-image\'s sample images: pip install scikit-image (or "fastervit-book[book]")'
        ) from error
    height, width = resolution
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    views, labels = [], []
    for label, name in enumerate(SKIMAGE_IMAGES):
        image = torch.from_numpy(getattr(data, name)()).float() / 255
        image = image[..., None].expand(-1, -1, 3) if image.ndim == 2 else image[..., :3]
        image = image.permute(2, 0, 1)  # (3, h, w)
        crop = int(0.7 * min(image.shape[1:]))
        top, left = (image.shape[1] - crop) // 2, (image.shape[2] - crop) // 2
        centre = image[:, top : top + crop, left : left + crop]
        for source in (image, centre):
            for scale in (1.0, 1.25):
                view = _resize_crop(source, (round(height * scale), round(width * scale)), (height, width))
                for flip in (False, True):
                    views.append(((view.flip(-1) if flip else view) - mean) / std)
                    labels.append(label)
    return torch.stack(views), torch.tensor(labels)


def _resize_crop(image: torch.Tensor, cover: tuple[int, int], size: tuple[int, int]) -> torch.Tensor:
    """Resize ``image`` ``(3, h, w)`` (antialiased) to cover ``cover``, then centre-crop ``size``."""
    factor = max(cover[0] / image.shape[1], cover[1] / image.shape[2])
    resized = F.interpolate(
        image[None],
        size=(max(size[0], round(image.shape[1] * factor)), max(size[1], round(image.shape[2] * factor))),
        mode="bilinear",
        antialias=True,
        align_corners=False,
    )[0]
    top = (resized.shape[1] - size[0]) // 2
    left = (resized.shape[2] - size[1]) // 2
    return resized[:, top : top + size[0], left : left + size[1]]


@torch.no_grad()
def fit_probe_head(model: nn.Module, images: torch.Tensor, labels: torch.Tensor) -> nn.Module:
    """Give ``model`` (a FasterViT) a classifier that is confident on ``images``: the nearest
    class mean of its pooled features, one class per distinct label.

    A model with random weights predicts 1000 classes from nearly equal logits, so the top
    class flips with any rounding and its top-1 agreement measures coin flips. Trained
    models are confident; so is this probe, fitted in closed form: with class means ``m_c``
    of the features ``f``, ``logit_c = f . m_c - |m_c|^2 / 2``. The head is replaced in place.

    Shapes: images ``(N, 3, H, W)``, labels ``(N,)`` ints in ``[0, classes)``.
    """
    model.eval()
    features = model.forward_head(model.forward_features(images), pre_logits=True)  # (N, C)
    classes = int(labels.max()) + 1
    means = torch.stack([features[labels == c].mean(0) for c in range(classes)])  # (classes, C)
    model.reset_classifier(classes)
    model.head.weight.copy_(means)
    model.head.bias.copy_(-0.5 * means.pow(2).sum(1))
    return model


def agreement(reference: torch.Tensor, candidate: torch.Tensor) -> dict[str, float]:
    """How far ``candidate`` logits are from ``reference`` logits ``(N, classes)``: the share
    of equal top-1 predictions and the largest absolute difference of a logit."""
    if reference.shape != candidate.shape:
        raise ValueError(f"logit shapes differ: {tuple(reference.shape)} and {tuple(candidate.shape)}")
    reference, candidate = reference.float(), candidate.float()
    return {
        "top1_agreement": float((reference.argmax(-1) == candidate.argmax(-1)).float().mean()),
        "max_abs_logit_diff": float((reference - candidate).abs().max()),
        "logit_range": float(reference.max() - reference.min()),
        "images": reference.shape[0],
    }


class Runner:
    """One model prepared for timing under one :class:`BenchSettings`.

    ``step()`` runs the timed batch (a training step when ``settings.train``),
    ``step_latency()`` a batch of one, ``predict(x)`` any batch (for agreement). The model is deployed or exported here as the settings ask;
    ``torch.compile`` compiles on the first calls, inside the warm-up.
    """

    def __init__(self, model: nn.Module, settings: BenchSettings, in_chans: int = 3) -> None:
        self.settings = settings
        self.device = torch.device(settings.device)
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # pick the fastest conv kernels during warm-up
        model = model.train(settings.train).to(self.device)
        shape = (in_chans, *settings.resolution)
        self.inputs = torch.randn(settings.batch_size, *shape, device=self.device)
        self.latency_inputs = torch.randn(1, *shape, device=self.device)
        self.autocast = nullcontext()
        self.note: str | None = None
        self._tmp: tempfile.TemporaryDirectory | None = None
        if settings.runtime == "onnxruntime":
            self._tmp = tempfile.TemporaryDirectory(prefix="fastervit-bench-")
            path = os.path.join(self._tmp.name, "model.onnx")
            export_onnx(model, torch.randn(2, *shape), path)
            self.model = onnx_runner(path, threads=torch.get_num_threads())
        elif settings.deploy is not None:
            self.model = deploy(
                model, settings.deploy, resolution=settings.resolution, batch_size=settings.batch_size
            )
            self.note = ", ".join(f"{k}={v}" for k, v in self.model.applied.items() if k != "compile_kwargs")
        else:
            memory_format = torch.channels_last if settings.channels_last else torch.contiguous_format
            if settings.channels_last:  # a copy: the caller's model may serve other settings
                model = copy.deepcopy(model).to(memory_format=memory_format)
            self.model = torch.compile(model) if settings.compile else model
            self.inputs = self.inputs.contiguous(memory_format=memory_format)
            self.latency_inputs = self.latency_inputs.contiguous(memory_format=memory_format)
            dtype = AMP_DTYPES.get(settings.amp)
            if dtype is not None:
                self.autocast = torch.autocast(self.device.type, dtype=dtype)
        if settings.train:
            classes = torch.randint(1000, (settings.batch_size,), generator=torch.Generator().manual_seed(0))
            self.targets = (classes % _num_classes(model)).to(self.device)
            self.optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5)
        self.warmup_s: float | None = None

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        with torch.inference_mode(), self.autocast:
            return self.model(x.to(self.device))

    def step(self) -> torch.Tensor:
        if not self.settings.train:
            return self.predict(self.inputs)
        self.optimizer.zero_grad(set_to_none=True)
        with self.autocast:
            loss = F.cross_entropy(self.model(self.inputs).float(), self.targets)
        loss.backward()
        self.optimizer.step()
        return loss.detach()

    def step_latency(self) -> torch.Tensor:
        return self.predict(self.latency_inputs)

    def warm_up(self) -> None:
        start = time.perf_counter()
        for _ in range(max(self.settings.warmup, 1)):
            self.step()
            if not self.settings.train:
                self.step_latency()
        synchronize(self.device)
        self.warmup_s = time.perf_counter() - start

    def time(self, iters: int | None = None) -> tuple[list[float], list[float]]:
        """Milliseconds per timed batch and per batch of one, ``iters`` (default: the settings') each;
        no batches of one for a training step."""
        iters = iters or self.settings.iters
        batches = time_batches(self.step, iters, self.device)
        return batches, [] if self.settings.train else time_batches(self.step_latency, iters, self.device)


@contextmanager
def _quiet_stderr() -> Iterator[None]:
    """Silence file descriptor 2 (where the profiler's C++ library logs), then restore it."""
    sys.stderr.flush()
    saved = os.dup(2)
    try:
        with open(os.devnull, "w") as devnull:
            os.dup2(devnull.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def operator_profile(run: Callable[[], Any], iters: int = 3, top: int = 10) -> list[dict[str, Any]]:
    """The ``top`` operators of ``run()`` by self time (time in the operator itself, not in the
    operators it calls), over ``iters`` calls, with the profiler's log lines silenced.

    Returns:
        One dict per operator, most expensive first: ``operator`` (its name), ``self_ms``
        (milliseconds per call of ``run``), ``share`` (of all operators' self time) and
        ``calls`` (per call of ``run``).
    """
    if iters < 1:
        raise ValueError(f"iters must be at least 1, got {iters}")
    with _quiet_stderr(), torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(iters):
            run()
    events = [e for e in prof.key_averages() if e.self_cpu_time_total > 0]
    total = sum(e.self_cpu_time_total for e in events)
    events.sort(key=lambda e: e.self_cpu_time_total, reverse=True)
    return [
        {
            "operator": e.key,
            "self_ms": e.self_cpu_time_total / 1e3 / iters,
            "share": e.self_cpu_time_total / total,
            "calls": round(e.count / iters),
        }
        for e in events[:top]
    ]


def _num_classes(model: nn.Module) -> int:
    """Classes of a classifier: its ``num_classes``, else the last linear layer's outputs."""
    if isinstance(getattr(model, "num_classes", None), int):
        return model.num_classes
    return [m for m in model.modules() if isinstance(m, nn.Linear)][-1].out_features


def build_model(name: str) -> tuple[nn.Module, str]:
    """A FasterViT, one of the package's comparison models (:data:`fastervit.peers.PEERS`), or a
    peer from timm (else torchvision), with random weights.

    Returns the model and where it came from; raises ``ModuleNotFoundError`` naming what to
    install when no library provides ``name``.
    """
    if name in list_models():
        return create_model(name), "fastervit"
    if name in package_peers.PEERS:
        return package_peers.create_peer(name), "fastervit.peers"
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
        f"unknown model {name!r}: a FasterViT from fastervit.list_models(), a comparison model in "
        f"{list(package_peers.PEERS)} or a peer in {list(PEERS)}"
    )


def model_gmacs(
    name: str, model: nn.Module, resolution: tuple[int, int]
) -> tuple[float | None, float | None]:
    """GMACs per image (uncached, cached position bias): formulas for FasterViT, fvcore for
    other models, None where fvcore cannot trace one."""
    if name in list_models():
        report = analytic_report(name, resolution)
        return report.gmacs, report.gmacs_cached_bias
    try:
        in_chans = getattr(model, "in_chans", 3)
        analysis = flop_analysis(model.cpu().eval(), torch.zeros(1, in_chans, *resolution))
        gmacs = analysis.total() / 1e9
        return gmacs, gmacs
    except (RuntimeError, TypeError, ValueError, AssertionError):  # fvcore cannot trace every model
        return None, None


@dataclass
class _Prepared:
    """A model built, moved, warmed up, with what its records need."""

    name: str
    source: str
    params: int
    gmacs: tuple[float | None, float | None]
    runner: Runner
    memory: tuple[float | None, str]
    agreement: dict[str, Any] | None


def is_reference(settings: BenchSettings) -> bool:
    """Whether ``settings`` run the model as trained: float32, eager, default layout."""
    plain = not (settings.amp or settings.compile or settings.channels_last)
    return settings.runtime == "torch" and settings.deploy in (None, EAGER) and plain


class _Reference:
    """Float32 eager logits of one model on :func:`reference_images`, computed once, lazily."""

    def __init__(self, model: nn.Module, resolution: tuple[int, int], device: str) -> None:
        self.model, self.resolution, self.device = model, resolution, torch.device(device)
        self._found: tuple[torch.Tensor, torch.Tensor] | None = None

    def compare(self, runner: Runner) -> dict[str, Any]:
        """``runner``'s agreement with float32 eager on the reference images."""
        try:
            if self._found is None:
                images, _ = reference_images(self.resolution)
                with torch.inference_mode():
                    logits = self.model.eval().to(self.device)(images.to(self.device)).float().cpu()
                self._found = images, logits
        except ModuleNotFoundError as error:
            return {"error": str(error)}
        images, logits = self._found
        return agreement(logits, runner.predict(images).cpu())


def _prepare(
    name: str,
    settings: BenchSettings,
    log: Callable[[str], None],
    model: nn.Module | None = None,
    reference: _Reference | None = None,
) -> _Prepared:
    """Build (or take) the model, prepare it for ``settings``, warm it up and, for a FasterViT
    run any other way than as trained, measure its agreement with ``reference``."""
    if model is None:
        model, source = build_model(name)
    else:
        source = "fastervit" if name in list_models() else "given"
    if source != "fastervit" and (settings.deploy is not None or settings.runtime != "torch"):
        raise ValueError(f"{settings.label()} applies to FasterViT models only, not to {name!r}")
    params = sum(p.numel() for p in model.parameters())
    gmacs = model_gmacs(name, model, settings.resolution)
    if source == "fastervit" and not is_reference(settings) and not settings.train:
        reference = reference or _Reference(model, settings.resolution, settings.device)
    else:
        reference = None
    baseline = _reset_memory(settings.device)
    runner = Runner(model, settings, in_chans=getattr(model, "in_chans", 3))
    runner.warm_up()
    memory = peak_memory_mb(runner.device, baseline)  # weights and the warm-up's activations
    found = reference.compare(runner) if reference is not None else None
    log(f"built {name} ({source}) [{settings.label()}], warm-up {runner.warmup_s:.1f} s")
    return _Prepared(name, source, params, gmacs, runner, memory, found)


def _record(
    prepared: _Prepared, times: tuple[list[float], list[float]], peak_tflops: float | None
) -> dict[str, Any]:
    settings = prepared.runner.settings
    stats = summarise(times[0], settings.batch_size)
    latency = summarise(times[1], 1) if times[1] else {"ms_per_batch_median": None, "ms_per_batch_iqr": None}
    record = {
        "model": prepared.name,
        "source": prepared.source,
        "label": settings.label(),
        "params": prepared.params,
        "batch_size": settings.batch_size,
        **stats,
        "timed_batches": len(times[0]),
        "latency_ms_median": latency["ms_per_batch_median"],
        "latency_ms_iqr": latency["ms_per_batch_iqr"],
        "peak_memory_mb": prepared.memory[0],
        "memory_kind": prepared.memory[1],
        "gmacs": prepared.gmacs[0],
        "gmacs_cached_bias": prepared.gmacs[1],
        "warmup_s": prepared.runner.warmup_s,
        "device": prepared.runner.device.type,
        "settings": settings.record(),
        "applied": prepared.runner.note,
        "agreement": prepared.agreement,
    }
    # The work done per image in inference is the cached-bias count (position MLPs not rerun).
    if prepared.gmacs[1] is not None and not settings.train:
        tflops = 2 * prepared.gmacs[1] * 1e9 * stats["images_per_s"] / 1e12
        record["achieved_tflops"] = tflops
        if peak_tflops:
            record["peak_tflops"] = peak_tflops
            record["mfu"] = tflops / peak_tflops
    return record


def _time_alternating(prepared: Sequence[_Prepared], rounds: int) -> list[tuple[list[float], list[float]]]:
    """``rounds`` rounds, each timing every model for its share of ``iters`` batches in turn."""
    times: list[tuple[list[float], list[float]]] = [([], []) for _ in prepared]
    for _ in range(rounds):
        for i, p in enumerate(prepared):
            batches, single = p.runner.time(max(1, math.ceil(p.runner.settings.iters / rounds)))
            times[i][0].extend(batches)
            times[i][1].extend(single)
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
    is timed for its share of ``settings.iters`` batches (and as many batches of one) in
    turn, so that drifts of the machine hit all of them alike. Models whose library is
    missing are skipped with a message, and a record saying so.
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
    model: nn.Module | None = None,
) -> list[dict[str, Any]]:
    """One model under several settings, timed in alternation; speed-ups against the first.

    ``model`` (default: ``name`` built with random weights) is used as given, e.g. with
    trained weights. Every FasterViT setting other than float32 eager gets its
    ``agreement`` with float32 eager on :func:`reference_images`.
    """
    model = model if model is not None else build_model(name)[0]
    reference = _Reference(model, variants[0].resolution, variants[0].device)
    prepared = [_prepare(name, settings, log, model, reference) for settings in variants]
    records = [_record(p, t, peak_tflops) for p, t in zip(prepared, _time_alternating(prepared, rounds))]
    for r in records:
        r["speedup_vs_first"] = r["images_per_s"] / records[0]["images_per_s"]
        if r["latency_ms_median"] is not None:
            r["latency_speedup_vs_first"] = records[0]["latency_ms_median"] / r["latency_ms_median"]
        log(f"{name} [{r['label']}]: {r['images_per_s']:.1f} img/s, x{r['speedup_vs_first']:.2f}")
    return records


def ablation_settings(settings: BenchSettings, onnxruntime: bool | None = None) -> list[BenchSettings]:
    """Float32 eager, each deploy optimisation alone, all of them, and (on the CPU, where it
    is installed) ONNX Runtime, at the batch, size and device of ``settings``."""
    base = replace(settings, amp=None, channels_last=False, compile=False, runtime="torch")
    variants = [replace(base, deploy=options, name=name) for name, options in ablation_options().items()]
    if onnxruntime is None:
        onnxruntime = importlib.util.find_spec("onnxruntime") is not None
    if onnxruntime and torch.device(settings.device).type == "cpu":
        variants.append(replace(base, runtime="onnxruntime", name="onnxruntime"))
    return variants
