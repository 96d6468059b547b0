"""The steps of chapter 11's GPU training run that the `fastervit` command does not do itself.

Called by scripts/train_gpu.sh, which holds the recipe:

  plan        time one training step of each model on a synthetic batch (forward+backward
              alone, and the loop's whole step without data loading), then choose how many
              epochs fit the time budget; writes plan.json, prints "EPOCHS WARMUP EMA_DECAY"
  train-peer  `fastervit train` with the same flags, for a peer model of
              fastervit.train.peers (the CLI builds FasterViTs only)
  report      copy a run's logs into the results folder, and evaluate its final weights:
              final.json (top-1 of the model and its EMA, throughput), confusion.csv,
              predictions.json
"""

import argparse
import csv
import json
import math
import shutil
import statistics
import sys
import time
from pathlib import Path

import torch
from torch import nn

import fastervit
from fastervit.commands import train as train_command
from fastervit.data.datasets import build_dataset, build_source
from fastervit.train.checkpointing import load_training_checkpoint
from fastervit.train.ema import ModelEma
from fastervit.train.loop import AMP_DTYPES, train
from fastervit.train.losses import smooth_one_hot, soft_target_cross_entropy
from fastervit.train.optim import Lamb, param_groups_weight_decay
from fastervit.train.peers import PEERS, create_peer

EPOCH_OVERHEAD_S = 3.0  # per epoch: starting the loader workers, writing two checkpoints
LOOP_OVERHEAD = 1.1  # the loop's step vs the same step timed on a batch already on the device


def build_model(name: str, kwargs: dict) -> nn.Module:
    return create_peer(name, **kwargs) if name in PEERS else fastervit.create_model(name, **kwargs)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def steps_per_second(step, device: torch.device, warmup: int, steps: int) -> float:
    """Calls of ``step()`` per second, after ``warmup`` untimed calls."""
    for _ in range(warmup):
        step()
    synchronize(device)
    start = time.perf_counter()
    for _ in range(steps):
        step()
    synchronize(device)
    return steps / (time.perf_counter() - start)


def time_model(name: str, kwargs: dict, args: argparse.Namespace, info) -> dict:
    """Steps/s of forward+backward, of the loop's whole step without data, and of evaluation."""
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(name, kwargs)
    memory_format = torch.channels_last if args.channels_last else torch.preserve_format
    model = model.to(device, memory_format=memory_format).train()
    amp_dtype = AMP_DTYPES.get(args.amp)
    images = torch.randn(args.batch_size, info.channels, args.img_size, args.img_size, device=device)
    images = images.contiguous(memory_format=memory_format)
    labels = torch.randint(info.num_classes, (args.batch_size,), device=device)
    targets = smooth_one_hot(labels, info.num_classes, 0.1)  # (B, K), as mixup makes them
    optimizer = Lamb(param_groups_weight_decay(model, 0.05), lr=1e-4)
    ema = ModelEma(model, 0.999)

    def forward_backward() -> torch.Tensor:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)  # (B, K)
        loss = soft_target_cross_entropy(logits, targets)
        loss.backward()
        return loss

    def pure_step() -> None:
        forward_backward()
        model.zero_grad(set_to_none=True)

    def loop_step() -> None:
        # What fastervit.train.loop does per step once the batch is on the device, including
        # its two reads of device values (loss and gradient norm) that wait for the GPU.
        loss = float(forward_backward().detach())
        grad_norm = float(nn.utils.clip_grad_norm_(model.parameters(), 5.0))
        optimizer.step()
        ema.update(model)
        model.zero_grad(set_to_none=True)
        assert math.isfinite(loss) and math.isfinite(grad_norm)

    @torch.no_grad()
    def eval_batch() -> None:
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            model(images)

    timing = (device, args.timing_warmup, args.timing_steps)
    result = {
        "params": sum(p.numel() for p in model.parameters()),
        "forward_backward_steps_per_s": steps_per_second(pure_step, *timing),
        "train_step_steps_per_s": steps_per_second(loop_step, *timing),
    }
    model.eval()
    result["eval_batches_per_s"] = steps_per_second(eval_batch, *timing)
    return result


def plan(args: argparse.Namespace) -> None:
    """Time both models and choose the epochs that fit ``--budget-s``; write plan.json."""
    info = build_source(args.dataset, "train").info
    n_train, n_val = len(build_source(args.dataset, "train")), len(build_source(args.dataset, "val"))
    steps_per_epoch = n_train // args.batch_size
    eval_batches = math.ceil(n_val / args.batch_size)
    runs = {
        args.fastervit: json.loads(args.fastervit_kwargs),
        args.peer: json.loads(args.peer_kwargs),
    }
    models, epoch_s = {}, 0.0
    for name, kwargs in runs.items():
        kwargs = {
            "num_classes": info.num_classes,
            "in_chans": info.channels,
            "resolution": args.img_size,
            "drop_path_rate": args.drop_path,
            **kwargs,
        }
        timing = time_model(name, kwargs, args, info)
        seconds = (
            steps_per_epoch / timing["train_step_steps_per_s"] * LOOP_OVERHEAD
            + 2 * eval_batches / timing["eval_batches_per_s"]  # the model and its EMA
            + EPOCH_OVERHEAD_S
        )
        models[name] = {**timing, "estimated_epoch_s": seconds}
        epoch_s += seconds
        print(f"{name}: {json.dumps(models[name])}", file=sys.stderr)
    epochs = max(1, min(args.max_epochs, int(args.budget_s // epoch_s)))
    total_steps = epochs * steps_per_epoch
    result = {
        "device": torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu",
        "torch_version": torch.__version__,
        "dataset": args.dataset,
        "batch_size": args.batch_size,
        "img_size": args.img_size,
        "amp": args.amp,
        "channels_last": args.channels_last,
        "steps_per_epoch": steps_per_epoch,
        "budget_s": args.budget_s,
        "epochs": epochs,
        # A tenth of the run warms up; the EMA's time constant 1 / (1 - decay) is a twentieth
        # of it, as in the released ImageNet recipe (0.9998 over about 97k steps).
        "warmup_epochs": round(epochs / 10, 2),
        "model_ema_decay": round(1 - 20 / total_steps, 6) if total_steps > 40 else 0.9,
        "estimated_train_s": epochs * epoch_s,
        "models": models,
    }
    out = Path(args.output)
    out.mkdir(parents=True, exist_ok=True)
    (out / "plan.json").write_text(json.dumps(result, indent=2) + "\n")
    print(result["epochs"], result["warmup_epochs"], result["model_ema_decay"])


def train_peer(argv: list[str]) -> None:
    """Parse ``argv`` as `fastervit train` does and train a peer model with it."""
    parser = argparse.ArgumentParser(prog="training_run.py train-peer")
    train_command.add_arguments(parser.add_subparsers(dest="command").add_parser("train"))
    config = train_command.config_from_args(parser.parse_args(["train", *argv]))
    if config.model not in PEERS:
        sys.exit(f"--model must be a peer ({', '.join(PEERS)}), got {config.model!r}")
    print(json.dumps(train(config, model_factory=create_peer)), flush=True)


@torch.no_grad()
def predict(model: nn.Module, dataset, args: argparse.Namespace) -> tuple[torch.Tensor, torch.Tensor]:
    """Softmax probabilities ``(N, K)`` and labels ``(N,)`` over a whole dataset."""
    device, amp_dtype = torch.device(args.device), AMP_DTYPES.get(args.amp)
    loader = torch.utils.data.DataLoader(dataset, batch_size=args.batch_size, num_workers=args.workers)
    model.to(device).eval()
    probs, labels = [], []
    for images, target in loader:
        images = images.to(device)
        if args.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)  # (B, K)
        probs.append(logits.float().softmax(-1).cpu())
        labels.append(target)
    return torch.cat(probs), torch.cat(labels)


def read_rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def report(args: argparse.Namespace) -> None:
    """Logs, final accuracies, confusion matrix, sample predictions and throughput of one run."""
    run, results = Path(args.run), Path(args.results)
    results.mkdir(parents=True, exist_ok=True)
    for name in ("steps.csv", "epochs.csv", "run.json"):
        shutil.copy(run / name, results / name)
    run_info = json.loads((run / "run.json").read_text())
    checkpoint = load_training_checkpoint(run / "last.pt")
    name, kwargs = checkpoint["model_name"], checkpoint["model_kwargs"]
    model = build_model(name, kwargs)
    weights = "ema" if checkpoint["ema"] is not None else "model"
    model.load_state_dict(checkpoint["ema"]["module"] if weights == "ema" else checkpoint["model"])

    config = checkpoint["config"]
    val_set = build_dataset(config["dataset"], "val", config["data_dir"], img_size=kwargs["resolution"])
    probs, labels = predict(model, val_set, args)
    predictions = probs.argmax(-1)
    k = probs.shape[1]
    confusion = torch.bincount(labels * k + predictions, minlength=k * k).view(k, k)  # rows: true class
    classes = list(getattr(val_set.source, "classes", range(k)))
    with (results / "confusion.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["true \\ predicted", *classes])
        for name_i, row in zip(classes, confusion.tolist()):
            writer.writerow([name_i, *row])

    def sample(i: int) -> dict:
        top = probs[i].topk(3)
        return {
            "index": i,
            "label": int(labels[i]),
            "predicted": int(predictions[i]),
            "top3": [[int(c), round(float(p), 4)] for p, c in zip(top.values, top.indices)],
        }

    wrong = (predictions != labels).nonzero().flatten().tolist()
    (results / "predictions.json").write_text(
        json.dumps(
            {
                "weights": weights,
                "classes": classes,
                "first": [sample(i) for i in range(min(args.samples, len(labels)))],
                "first_wrong": [sample(i) for i in wrong[: args.samples]],
            },
            indent=1,
        )
        + "\n"
    )

    epochs = read_rows(run / "epochs.csv")
    last = epochs[-1]
    steps_per_epoch = run_info["steps_per_epoch"]
    # The first epoch also pays for warming up the device (kernel selection, allocator).
    timed = [float(r["epoch_time_s"]) for r in (epochs[1:] or epochs)]
    loop_steps_per_s = steps_per_epoch / statistics.median(timed)
    plan_info = json.loads(Path(args.plan).read_text())
    timing = plan_info["models"][name]

    def number(key: str) -> float | None:
        return None if last[key] in ("", None) else float(last[key])

    final = {
        "model": name,
        "model_kwargs": kwargs,
        "params": sum(p.numel() for p in model.parameters()),
        "dataset": config["dataset"],
        "device": plan_info["device"],
        "epochs": len(epochs),
        "steps": int(last["step"]),
        "train_time_s": sum(float(r["epoch_time_s"]) for r in epochs),
        "top1": number("top1"),
        "top5": number("top5"),
        "ema_top1": number("ema_top1"),
        "ema_top5": number("ema_top5"),
        "best_top1": max(float(r["ema_top1"] or r["top1"]) for r in epochs),
        "confusion_weights": weights,
        "confusion_top1": 100.0 * float(confusion.trace()) / float(confusion.sum()),
        "throughput": {
            "batch_size": config["batch_size"],
            "loop_steps_per_s": loop_steps_per_s,
            "loop_images_per_s": loop_steps_per_s * config["batch_size"],
            "train_step_steps_per_s": timing["train_step_steps_per_s"],
            "forward_backward_steps_per_s": timing["forward_backward_steps_per_s"],
            "loop_vs_train_step": loop_steps_per_s / timing["train_step_steps_per_s"],
        },
    }
    (results / "final.json").write_text(json.dumps(final, indent=2) + "\n")
    print(json.dumps(final))


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "train-peer":
        train_peer(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    p = commands.add_parser("plan", help="time a step of each model, choose the epochs")
    p.add_argument("--output", required=True, help="folder for plan.json")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--fastervit", default="faster_vit_0_224")
    p.add_argument("--fastervit-kwargs", default="{}")
    p.add_argument("--peer", default="resnet18_like")
    p.add_argument("--peer-kwargs", default="{}")
    p.add_argument("--budget-s", type=float, required=True, help="training seconds for both models")
    p.add_argument("--max-epochs", type=int, default=40)
    p.add_argument("--drop-path", type=float, default=0.0, help="stochastic depth rate of the runs")
    p.add_argument("--timing-warmup", type=int, default=10)
    p.add_argument("--timing-steps", type=int, default=30)
    p.set_defaults(handler=plan)
    p = commands.add_parser("report", help="results of one finished run")
    p.add_argument("--run", required=True, help="the run's --output folder")
    p.add_argument("--results", required=True, help="where its result files go")
    p.add_argument("--plan", required=True, help="plan.json of this training run")
    p.add_argument("--samples", type=int, default=16)
    p.add_argument("--workers", type=int, default=4)
    p.set_defaults(handler=report)
    commands.add_parser("train-peer", help="`fastervit train` flags, for a peer model")
    for sub in (commands.choices["plan"], commands.choices["report"]):
        sub.add_argument("--device", default="cuda", choices=("cpu", "cuda"))
        sub.add_argument("--amp", choices=("bf16", "fp16"))
        sub.add_argument("--channels-last", action="store_true")
        sub.add_argument("--batch-size", type=int, default=512)
    commands.choices["plan"].add_argument("--img-size", type=int, default=96)
    args = parser.parse_args()
    args.handler(args)


if __name__ == "__main__":
    main()
