"""LoRA fine-tuning at long inputs: peak memory and step time at 1k, 8k and 32k nucleotides, per tokenizer stride.

    python benchmarks/finetune_memory.py --threads 2                          # CPU: reduced size, peak RSS growth
    python benchmarks/finetune_memory.py --threads 2 --attention-dropout 0 --append   # + the fused CPU attention kernel
    python benchmarks/finetune_memory.py --threads 1 --attention-dropout 0 --checkpointing off --strides 1 4 8 \
        --output benchmarks/results/finetune_stride_cpu.json             # one code per 1, 4 and 8 nt
    python benchmarks/finetune_memory.py --device cuda                        # GPU: BERT-base size, max_memory_allocated

The model is what ``vqdna finetune`` trains: ``VqdnaForSequenceClassification``
over one level of VQ codes (``VqdnaConfig(vocab_sizes=[512],
code_embedding_dim=64)``, frozen codebook, 2 labels) wrapped by peft's
``get_peft_model`` with ``LoraConfig(task_type="SEQ_CLS", r=8, lora_alpha=16,
target_modules=[query, key, value, dense, intermediate, output],
modules_to_save=["classifier"])`` (``LoraSettings``' defaults, LoRA dropout
0.05), optionally with gradient checkpointing
(``enable_gradient_checkpointing`` of ``vqdna.finetune.train``, non-reentrant,
before wrapping, as ``finetune`` does). One step is the
fine-tuning loop's: forward with an all-true attention mask and labels (bf16
autocast on CUDA), ``zero_grad``, backward, gradient clipping to norm 1, AdamW.

Lengths are in nucleotides. A VQ or HRQ tokenizer with ``VQConfig(stride=s)``
emits one code per ``s`` nucleotides (``s = 1``, the paper's, one per
nucleotide), and fine-tuning reads those precomputed codes, so a length of
``L`` nt at stride ``s`` is the encoder on ``ceil(L / s)`` tokens: the
tokenizer itself is not run here. ``--strides`` (default 1) names the strides
to measure; rows carry ``length_nt``, ``stride`` and ``tokens``.

Each (length, stride, checkpointing, attention dropout) runs in a fresh process.
On CPU the peak is the growth of peak RSS (``ru_maxrss``) over the RSS after
the model is built; the process's address space is capped at the budget
(``--max-memory-gb``, default 16, lowered to what the machine has free less
2 GB) so a length that
does not fit fails its allocation and is recorded as ``out_of_memory``
instead of starting the kernel's OOM killer. On CUDA the peak is
``torch.cuda.max_memory_allocated`` (reset after the model is on the device;
the weights are reported apart) and the budget (default: the device's
memory) is enforced with ``torch.cuda.set_per_process_memory_fraction``. A process over ``--time-cap-s``
is stopped and recorded as ``time_cap``. A length whose first step takes over
``--single-step-after-s`` is measured on that one step only (``steps`` says
how many were timed). The output names, per setting and stride, the longest length that
fit the budget. From its rows it fits, per run and setting, the cost model
``t(T) = a T + b T^2`` of the step's seconds per sequence against the tokens
``T`` (least squares over every stride together, since the encoder only sees
tokens; ``cost_model``), and, per length, the speed-up of each stride over
stride 1 (``stride_speedups``); ``--summarise`` derives both again from an
existing output's rows without measuring. ``--append`` adds a run's rows to the existing output file
(``runs`` keeps each run's machine and settings; rows name their ``run``).

Attention dropout (``attention_probs_dropout_prob``, 0.1 by default) decides
the SDPA kernel on CPU: PyTorch's fused CPU attention has no dropout, so in
training mode with dropout > 0 SDPA falls back to its math kernel, which
materialises batch x heads x L x L scores. ``--attention-dropout 0.1 0``
measures both.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from pathlib import Path

from machine import cpu_name
from smoke import parse_args
from timing import training_step

REPO = Path(__file__).resolve().parents[1]
SIZES = {  # device -> hidden, layers, heads, intermediate
    "cpu": {"hidden": 256, "layers": 4, "heads": 4, "intermediate": 1024},
    "cuda": {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072},
}
# --smoke: one short length with checkpointing, the setting that runs the most of the fine-tuning code, at three strides
# (64, 22 and 16 tokens: 64 / 3 rounds up) so the cost model has three token counts to fit
SMOKE = {"lengths": [64], "strides": [1, 3, 4], "checkpointing": ["on"], "hidden": 32, "layers": 1, "heads": 2,
         "intermediate": 64, "threads": 1}


def _meminfo_gb(key: str) -> float | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 2**20
    except OSError:
        pass
    return None


def _status_kb(key: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1])
    raise KeyError(key)


def tokens_for(length_nt: int, stride: int) -> int:
    """Codes a strided tokenizer emits for ``length_nt`` nucleotides: the last, partial group of ``stride`` gets one too."""
    return -(-length_nt // stride)


def _least_squares(k, seconds, weights):
    """(a, b) per thousand tokens of ``seconds = a k + b k^2`` minimising the weighted squared residuals."""
    import numpy as np

    design = np.stack([k, k**2], axis=1) * weights[:, None]
    (a_k, b_k), *_ = np.linalg.lstsq(design, seconds * weights, rcond=None)
    return a_k, b_k


def fit_cost_model(points: list[tuple[int, float]]) -> dict | None:
    """Least squares ``seconds = a T + b T^2`` over (tokens T, seconds) points, no intercept; None under 2 token counts.

    No intercept because a step on no tokens costs (nearly) nothing beside a long one: the per-step constant
    (optimizer, launch) is folded into ``a`` at short lengths. T is scaled to thousands inside the solve so the
    T^2 column does not swamp the T column's precision. Plain least squares is ruled by the longest steps (the ones
    worth predicting), so it can miss short ones by a wide margin; ``relative_fit`` minimises the relative
    residuals instead, every point counting alike, to tell a bad weighting from a wrong shape.
    """
    import numpy as np

    if len({tokens for tokens, _ in points}) < 2:
        return None
    tokens = np.array([t for t, _ in points], dtype=float)
    seconds = np.array([s for _, s in points], dtype=float)
    k = tokens / 1000.0
    a_k, b_k = _least_squares(k, seconds, np.ones_like(seconds))
    predicted = a_k * k + b_k * k**2
    total = float(((seconds - seconds.mean()) ** 2).sum())
    relative = (predicted - seconds) / seconds
    a, b = a_k / 1000.0, b_k / 1000.0**2
    longest = float(tokens.max())
    ra_k, rb_k = _least_squares(k, seconds, 1 / seconds)
    relative_fit = {"a_seconds_per_token": float(f"{ra_k / 1000.0:.6g}"), "b_seconds_per_token_squared": float(f"{rb_k / 1000.0**2:.6g}"),
                    "max_abs_relative_error": round(float(np.abs((ra_k * k + rb_k * k**2 - seconds) / seconds).max()), 4)}
    return {
        "a_seconds_per_token": float(f"{a:.6g}"),
        "b_seconds_per_token_squared": float(f"{b:.6g}"),
        "r_squared": round(1 - float(((seconds - predicted) ** 2).sum()) / total, 5) if total > 0 else None,
        "max_abs_relative_error": round(float(np.abs(relative).max()), 4),
        # where the quadratic (attention) term equals the linear one; beyond it attention dominates the step
        "tokens_where_quadratic_equals_linear": round(a / b) if a > 0 and b > 0 else None,
        # the attention term's share of the step at the longest T (None when a negative coefficient makes it meaningless)
        "quadratic_share_at_longest": round(b * longest**2 / (a * longest + b * longest**2), 3) if a > 0 and b >= 0 else None,
        "relative_fit": relative_fit,
        "points": [{"tokens": int(t), "seconds": float(s), "predicted": float(f"{p:.4g}"), "relative_error": round(float(r), 4)}
                   for t, s, p, r in zip(tokens, seconds, predicted, relative)],
    }


def _per_sequence_seconds(row: dict) -> float | None:
    """A row's step time per sequence (the last timed step over the batch); None when it did not finish."""
    if row.get("status") != "ok" or not row.get("step_seconds_last"):
        return None
    return row["step_seconds_last"] / row.get("batch", 1)


def cost_models(rows: list[dict]) -> dict:
    """``fit_cost_model`` per run and setting: runs may differ in threads or model size, settings in the kernel."""
    groups: dict[str, list[tuple[int, float]]] = {}
    for row in rows:
        seconds = _per_sequence_seconds(row)
        if seconds is not None:  # rows of old runs have no stride: they were one code per nucleotide
            groups.setdefault(f"run={row.get('run', 0)},{row['setting']}", []).append((row.get("tokens", row["length_nt"]), seconds))
    return {key: fit for key, points in groups.items() if (fit := fit_cost_model(points)) is not None}


def stride_speedups(rows: list[dict]) -> list[dict]:
    """Per run, setting and length: stride 1's step over each other stride's (the target is at least ``stride``-fold)."""
    base = {(r.get("run", 0), r["setting"], r["length_nt"]): r for r in rows if r.get("stride", 1) == 1}
    speedups = []
    for row in rows:
        stride = row.get("stride", 1)
        reference = base.get((row.get("run", 0), row["setting"], row["length_nt"]))
        if stride == 1 or reference is None:
            continue
        entry = {"run": row.get("run", 0), "setting": row["setting"], "length_nt": row["length_nt"], "stride": stride,
                 "tokens": row.get("tokens"), "tokens_stride_1": reference.get("tokens", row["length_nt"])}
        slow, fast = _per_sequence_seconds(reference), _per_sequence_seconds(row)
        if slow is None or fast is None:
            entry["speedup"] = None
            entry["why_none"] = f"stride 1: {reference.get('status')}, stride {stride}: {row.get('status')}"
        else:
            entry["speedup"] = round(slow / fast, 2)
            entry["at_least_stride_fold"] = slow / fast >= stride
            # a long stride-1 row may have timed one step only (--single-step-after-s), the first, slower one: its
            # "last step" then faces the other's second step, so the first steps are compared too, like for like
            entry["steps_timed"] = [reference.get("steps"), row.get("steps")]
            entry["speedup_first_steps"] = round(reference["step_seconds"][0] / row["step_seconds"][0], 2)
        speedups.append(entry)
    return speedups


def is_out_of_memory(error: BaseException) -> bool:
    """An allocation that failed: CUDA's out-of-memory error, or on CPU a MemoryError or a refused allocation."""
    text = str(error).lower()
    return isinstance(error, MemoryError) or "out of memory" in text or "alloc" in text


def build_model(args, device: str, checkpointing: bool, attention_dropout: float | None):
    import torch
    from peft import LoraConfig, get_peft_model

    from vqdna.finetune.train import LoraSettings, enable_gradient_checkpointing
    from vqdna.lm.configuration import VqdnaConfig
    from vqdna.lm.modeling import VqdnaForSequenceClassification

    torch.manual_seed(args.seed)
    extra = {} if attention_dropout is None else {"attention_probs_dropout_prob": attention_dropout}
    config = VqdnaConfig(
        vocab_sizes=[args.vocab],
        code_embedding_dim=args.code_dim,
        hidden_size=args.hidden,
        num_hidden_layers=args.layers,
        num_attention_heads=args.heads,
        intermediate_size=args.intermediate,
        num_labels=2,
        problem_type="single_label_classification",
        **extra,
    )
    model = VqdnaForSequenceClassification(config)
    model.vqdna.set_code_embeddings([torch.randn(args.vocab, args.code_dim)])
    if checkpointing:
        enable_gradient_checkpointing(model)
    lora = LoraSettings()
    model = get_peft_model(
        model,
        LoraConfig(
            task_type="SEQ_CLS",
            r=lora.r,
            lora_alpha=lora.alpha,
            lora_dropout=lora.dropout,
            target_modules=lora.target_modules,
            modules_to_save=["classifier"],
        ),
    ).to(device)
    model.train()
    return model, config


def measure_one(args) -> dict:
    """One (length, stride, checkpointing, dropout) in this process; the budget is enforced before any step."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    device, cuda = args.device, args.device == "cuda"
    length, stride, checkpointing = args.one, args.strides[0], args.checkpointing[0] == "on"
    tokens = tokens_for(length, stride)  # the encoder sees codes, not nucleotides
    attention_dropout = None if args.attention_dropout[0] < 0 else args.attention_dropout[0]
    row = {"length_nt": length, "stride": stride, "tokens": tokens, "batch": args.batch, "gradient_checkpointing": checkpointing}
    model, config = build_model(args, device, checkpointing, attention_dropout)
    row["attention_dropout"] = config.attention_probs_dropout_prob
    trainable = [p for p in model.parameters() if p.requires_grad]
    row["params_total"] = sum(p.numel() for p in model.parameters())
    row["params_trainable"] = sum(p.numel() for p in trainable)
    optimizer = torch.optim.AdamW(trainable, lr=1e-4, weight_decay=0.01)
    generator = torch.Generator().manual_seed(args.seed)
    input_ids = torch.randint(0, args.vocab, (args.batch, tokens), generator=generator).to(device)
    attention = torch.ones_like(input_ids, dtype=torch.bool)
    labels = torch.randint(0, 2, (args.batch,), generator=generator).to(device)
    budget = int((args.budget_gb or args.max_memory_gb) * 2**30)

    if cuda:
        torch.cuda.synchronize()
        total = torch.cuda.get_device_properties(0).total_memory
        if budget < total:
            torch.cuda.set_per_process_memory_fraction(budget / total)
        row["weights_gb"] = round(torch.cuda.memory_allocated() / 2**30, 3)
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
    else:
        with torch.no_grad():  # start the thread pool and the allocator before the baseline
            model(input_ids=input_ids[:, :16], attention_mask=attention[:, :16])
        base = _status_kb("VmRSS") * 1024
        row["rss_before_gb"] = round(base / 2**30, 3)
        # cap the address space: an allocation past the budget fails (an OOM error) instead of the OOM killer
        limit = _status_kb("VmSize") * 1024 + budget
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))

    seconds = []
    inputs = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
    try:
        for _ in range(args.steps):
            seconds.append(training_step(model, optimizer, inputs, device)[0])
            if seconds[0] > args.single_step_after_s:
                break
        row["status"] = "ok"
    except (RuntimeError, MemoryError) as error:  # torch.cuda.OutOfMemoryError is a RuntimeError
        if not is_out_of_memory(error):
            raise
        row["status"] = "out_of_memory"
        row["error"] = str(error).splitlines()[0][:300]
    if cuda:
        peak = torch.cuda.max_memory_allocated() - base
        row["peak_memory_gb"] = round(peak / 2**30, 3)
        row["peak_memory_measure"] = "torch.cuda.max_memory_allocated after the model is built, less the weights"
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - base
        row["peak_memory_gb"] = round(max(peak, 0) / 2**30, 3)
        row["peak_rss_gb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20, 3)
        row["peak_memory_measure"] = "growth of peak RSS (ru_maxrss) over the RSS after the model is built"
    row["steps"] = len(seconds)
    row["step_seconds"] = [round(s, 3) for s in seconds]
    if seconds:
        row["step_seconds_last"] = round(seconds[-1], 3)
        row["tokens_per_second"] = round(args.batch * tokens / seconds[-1], 1)
        row["nt_per_second"] = round(args.batch * length / seconds[-1], 1)
    if row["status"] == "ok" and peak > budget:
        row["status"] = "over_budget"
    return row


def measure_in_process(args, length: int, stride: int, checkpointing: str, dropout: float, passthrough: list[str]) -> dict:
    """One point in a fresh process (a clean peak RSS, and an address-space cap that cannot outlive it), under the time cap."""
    command = [sys.executable, __file__, "--one", str(length), "--strides", str(stride), "--checkpointing", checkpointing,
               "--attention-dropout", str(dropout), *passthrough]
    point = {"length_nt": length, "stride": stride, "tokens": tokens_for(length, stride), "gradient_checkpointing": checkpointing == "on"}
    started = time.perf_counter()
    try:
        out = subprocess.run(command, check=False, capture_output=True, text=True, timeout=args.time_cap_s)
    except subprocess.TimeoutExpired:
        row = {**point, "status": "time_cap", "time_cap_s": args.time_cap_s}
    else:
        lines = out.stdout.strip().splitlines()
        if out.returncode == 0 and lines:
            row = json.loads(lines[-1])
        else:
            row = {**point, "status": "killed" if out.returncode < 0 else "error", "returncode": out.returncode,
                   "stderr_tail": out.stderr.strip()[-500:]}
    row["process_seconds"] = round(time.perf_counter() - started, 1)
    # CPU steps on shared cores slow down with the machine's other work: each point says how busy it was
    row["load_average_1_at_end"] = round(os.getloadavg()[0], 2)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--lengths", type=int, nargs="+", default=[1024, 8192, 32768], help="input lengths in nucleotides")
    parser.add_argument("--strides", type=int, nargs="+", default=[1],
                        help="tokenizer strides, nucleotides per code: a length L runs on ceil(L / stride) tokens (default 1)")
    parser.add_argument("--checkpointing", nargs="+", choices=["off", "on"], default=["off", "on"],
                        help="gradient checkpointing settings to measure (default both)")
    parser.add_argument("--attention-dropout", type=float, nargs="+", default=[-1.0],
                        help="attention_probs_dropout_prob values to measure (default: the config's, 0.1)")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--steps", type=int, default=2, help="steps per length; the last one's time is reported")
    parser.add_argument("--single-step-after-s", type=float, default=60.0,
                        help="stop after the first step when it took longer than this (default 60)")
    parser.add_argument("--max-memory-gb", type=float, default=None,
                        help="memory budget per length (default: 16 on CPU, the device's memory on CUDA)")
    parser.add_argument("--time-cap-s", type=float, default=400.0, help="stop a length's process after this (default 400)")
    parser.add_argument("--hidden", type=int, help="default: 256 on CPU, 768 on CUDA")
    parser.add_argument("--layers", type=int, help="default: 4 on CPU, 12 on CUDA")
    parser.add_argument("--heads", type=int, help="default: 4 on CPU, 12 on CUDA")
    parser.add_argument("--intermediate", type=int, help="default: 1024 on CPU, 3072 on CUDA")
    parser.add_argument("--vocab", type=int, default=512)
    parser.add_argument("--code-dim", type=int, default=64)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="default benchmarks/results/finetune_memory_{device}.json")
    parser.add_argument("--append", action="store_true",
                        help="add this run's rows to an existing --output file instead of replacing it")
    parser.add_argument("--summarise", action="store_true",
                        help="measure nothing: derive cost_model and stride_speedups of the existing --output again from its rows")
    parser.add_argument("--one", type=int, help=argparse.SUPPRESS)  # internal: measure one length in this process
    parser.add_argument("--budget-gb", type=float, help=argparse.SUPPRESS)  # internal: the effective budget
    args = parse_args(parser, SMOKE)
    if min(args.strides) < 1:
        parser.error("--strides: every stride must be >= 1")
    if args.summarise:
        summarise(args.output or REPO / "benchmarks" / "results" / f"finetune_memory_{args.device}.json")
        return
    for key, value in SIZES[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    import torch

    if args.max_memory_gb is None:
        cuda = args.device == "cuda" and torch.cuda.is_available()
        args.max_memory_gb = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1) if cuda else 16.0
    if args.one:
        print(json.dumps(measure_one(args)), flush=True)
        return

    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible")
    if args.threads:
        torch.set_num_threads(args.threads)
    available = _meminfo_gb("MemAvailable")
    budget = args.max_memory_gb
    if args.device == "cpu" and available is not None:
        budget = min(budget, round(available - 2.0, 1))  # leave the machine's other work its memory
    machine = {
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "cpu_count": os.cpu_count(),
        "torch_threads": args.threads or torch.get_num_threads(),
        "torch": torch.__version__,
        "device": args.device,
        "device_name": torch.cuda.get_device_name() if args.device == "cuda" else cpu_name(),
        "memory_total_gb": round(_meminfo_gb("MemTotal") or 0, 1),
        "memory_available_gb_at_start": round(available or 0, 1),
        "load_average_1_5_15_at_start": [round(x, 2) for x in os.getloadavg()],
    }
    if args.device == "cuda":
        machine["cuda"] = torch.version.cuda
        machine["device_memory_gb"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)

    passthrough = ["--device", args.device, "--batch", str(args.batch), "--steps", str(args.steps),
                   "--single-step-after-s", str(args.single_step_after_s), "--budget-gb", str(budget),
                   "--hidden", str(args.hidden), "--layers", str(args.layers), "--heads", str(args.heads),
                   "--intermediate", str(args.intermediate), "--vocab", str(args.vocab), "--code-dim", str(args.code_dim),
                   "--seed", str(args.seed)]
    if args.threads:
        passthrough += ["--threads", str(args.threads)]
    output = args.output or REPO / "benchmarks" / "results" / f"finetune_memory_{args.device}.json"
    previous = json.loads(output.read_text()) if args.append and output.is_file() else None
    run_index = len(previous["runs"]) if previous else 0
    rows, longest = [], {}
    for dropout in args.attention_dropout:
        for checkpointing in args.checkpointing:
            setting = f"checkpointing={checkpointing},attention_dropout={'default' if dropout < 0 else dropout}"
            # stride 1 keeps the old key, so a file from before --strides and an --append to it agree
            keys = {stride: setting + ("" if stride == 1 else f",stride={stride}") for stride in args.strides}
            longest.update(dict.fromkeys(keys.values()))
            for length in args.lengths:  # strides inside lengths: a length's rows sit together, as the speed-ups read them
                for stride in args.strides:
                    row = measure_in_process(args, length, stride, checkpointing, dropout, passthrough)
                    row["setting"] = setting
                    row["run"] = run_index
                    rows.append(row)
                    print(json.dumps(row), flush=True)
                    if row["status"] == "ok":
                        longest[keys[stride]] = max(longest[keys[stride]] or 0, length)
    print(json.dumps({"longest_length_within_budget": longest, "budget_gb": budget}), flush=True)

    output.parent.mkdir(parents=True, exist_ok=True)
    machine["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    settings = {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k not in ("one", "budget_gb")}
    run = {"machine": machine, "settings": settings, "max_memory_gb_requested": args.max_memory_gb, "budget_gb": budget}
    if previous:  # --append: earlier runs' rows stay, a setting measured again keeps the longer length
        for setting, length in previous["longest_length_within_budget"].items():
            if setting not in longest or (length or 0) > (longest[setting] or 0):
                longest[setting] = length
        rows = previous["results"] + rows
    result = {
        "runs": (previous["runs"] if previous else []) + [run],
        "budget_note": "on CPU the budget is lowered to MemAvailable - 2 GB when that is smaller",
        "model": {"class": "VqdnaForSequenceClassification + peft LoRA", "hidden": args.hidden, "layers": args.layers,
                  "heads": args.heads, "intermediate": args.intermediate, "vocab_sizes": [args.vocab],
                  "code_embedding_dim": args.code_dim, "num_labels": 2},
        "step": "forward (all-true attention mask, labels) + zero_grad + backward + clip_grad_norm_(1.0) + AdamW"
                + (" under bf16 autocast" if args.device == "cuda" else ", fp32"),
        "longest_length_within_budget": longest,
        **derived(rows),
        "results": rows,
    }
    output.write_text(json.dumps(result, indent=2) + "\n")


def derived(rows: list[dict]) -> dict:
    """What the output derives from its rows (printed too, one JSON line each): the cost models and the speed-ups."""
    models, speedups = cost_models(rows), stride_speedups(rows)
    for key, fit in models.items():
        print(json.dumps({"cost_model": key, **{k: v for k, v in fit.items() if k != "points"}}), flush=True)
    for entry in speedups:
        print(json.dumps({"stride_speedup": entry}), flush=True)
    return {
        "cost_model_note": "per run and setting: seconds per sequence of the last timed step = a T + b T^2, T the tokens "
                           "(ceil(length_nt / stride)), least squares over every stride's ok rows together, no intercept; "
                           "r_squared is 1 - SS_res / SS_tot about the mean; relative_fit minimises the relative residuals",
        "cost_model": models,
        "stride_speedups": speedups,
    }


def summarise(output: Path) -> None:
    """--summarise: derive the cost models and speed-ups of an existing output again, from its rows, measuring nothing."""
    result = json.loads(output.read_text())
    result.update(derived(result["results"]))  # keys already there keep their place, new ones go last
    result["results"] = result.pop("results")  # the rows stay at the end, where a reader scrolls to them
    output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
