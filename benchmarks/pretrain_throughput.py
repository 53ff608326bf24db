"""MLM pretraining speed: training tokens/s and MFU of VqdnaForMaskedLM beside transformers' BertForMaskedLM.

    python benchmarks/pretrain_throughput.py --threads 2                  # CPU: reduced size (256 x 4 layers)
    python benchmarks/pretrain_throughput.py --device cuda                # GPU: BERT-base size, bf16 autocast

Both models are built at the same size (hidden, layers, heads, intermediate,
vocabulary 512, sequence length, batch) in the same process and trained on the
same random codes with the same 25% masked positions (``mask_positions`` of
``vqdna.lm.pretrain``, drawn before timing). Ours is the stage-2 model as
``vqdna pretrain`` builds it for a one-level VQ tokenizer
(``VqdnaConfig(vocab_sizes=[512], code_embedding_dim=64)``: frozen codebook,
projection to the hidden size, learned mask vector, pre-LN, RoPE, SDPA);
BERT is ``BertForMaskedLM`` (post-LN, learned absolute positions, ``[MASK]``
written into the input ids, SDPA). Dropout stays at both defaults (0.1).
One timed step is what ``vqdna pretrain``'s loop does: forward with an
all-true attention mask and labels (-100 where unmasked), ``zero_grad``,
backward, gradient clipping to norm 1, AdamW step. The two models' steps
alternate, so a change in the load of a shared machine falls on both; the
median step time is reported, and the fastest step as ``*_best``.

FLOPs per token of a training step (PaLM appendix B / Chinchilla accounting):

    6 * N  +  12 * layers * hidden * seq_len

N counts the weights of every matmul (every ``nn.Linear``): per layer Q, K, V,
attention output, MLP in and out; the MLM head (transform dense and the
decoder to the vocabulary, BERT's decoder tied to its word embedding counted
once); ours also the 64 -> hidden projection of the frozen codebook. Embedding
look-ups (codebook, BERT's word/position/type tables), biases and LayerNorms
are left out. 6N is 2N forward + 4N backward; 12·L·H·S is QK^T and AV (2·S·H
each per token and layer forward) times 3 for forward + backward. Every
position is counted as a token (the logits and both models' work cover all
positions, not only the 25% scored). MFU = achieved FLOP/s / device peak.
On CUDA the step runs under bf16 autocast, timed between
``torch.cuda.synchronize`` calls, against ``--peak-tflops`` (default 989,
H100 SXM dense bf16) and the project's goal of >= 45% MFU. On CPU the peak is
an estimate measured here: the best fp32 rate of a large ``torch.matmul``
(``--matmul-size``, before and after the model timings, the higher kept),
unless ``--peak-tflops`` is given. On CPU, training-mode SDPA with dropout
> 0 takes PyTorch's math kernel (the fused CPU kernel has no dropout) for both
models.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
from pathlib import Path

from machine import machine_info
from smoke import parse_args
from timing import matmul_tflops, training_step

REPO = Path(__file__).resolve().parents[1]
FLOPS_FORMULA = "6*N_matmul + 12*layers*hidden*seq_len  (per token, training step: forward + backward)"
N_MATMUL_DEFINITION = (
    "weights of every nn.Linear: per layer Q, K, V, attention output, MLP in and out; the MLM head "
    "(transform dense + decoder to the vocabulary; BERT's decoder, tied to its word embedding, counted once); "
    "ours also the code-embedding projection (code_embedding_dim -> hidden). Embedding tables, biases and "
    "LayerNorms are not counted."
)
GOAL_MFU = 0.45
SIZES = {  # device -> hidden, layers, heads, intermediate, batch, steps, warmup
    "cpu": {"hidden": 256, "layers": 4, "heads": 4, "intermediate": 1024, "batch": 8, "steps": 12, "warmup": 2},
    "cuda": {"hidden": 768, "layers": 12, "heads": 12, "intermediate": 3072, "batch": 64, "steps": 30, "warmup": 10},
}
# --smoke: both models at hidden 32, one layer, two timed steps of 2 x 64 tokens
SMOKE = {"hidden": 32, "layers": 1, "heads": 2, "intermediate": 64, "length": 64, "batch": 2, "steps": 2, "warmup": 1,
         "matmul_size": 128, "threads": 1}


def matmul_params(model) -> int:
    """N: weights of every nn.Linear, a shared (tied) weight once."""
    from torch import nn

    seen, total = set(), 0
    for module in model.modules():
        if isinstance(module, nn.Linear) and id(module.weight) not in seen:
            seen.add(id(module.weight))
            total += module.weight.numel()
    return total


def flops_per_token(n_matmul: int, layers: int, hidden: int, length: int) -> dict:
    dense, attention = 6 * n_matmul, 12 * layers * hidden * length
    return {"dense_6N": dense, "attention_12LHS": attention, "total": dense + attention}


def build_models(args, device: str):
    import torch
    from transformers import BertConfig, BertForMaskedLM

    from vqdna.lm.configuration import VqdnaConfig
    from vqdna.lm.modeling import VqdnaForMaskedLM

    torch.manual_seed(args.seed)
    ours = VqdnaForMaskedLM(
        VqdnaConfig(
            vocab_sizes=[args.vocab],
            code_embedding_dim=args.code_dim,
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            intermediate_size=args.intermediate,
        )
    )
    # a tokenizer's codebook stands in for the frozen input embedding, as vqdna pretrain copies it in
    ours.vqdna.set_code_embeddings([torch.randn(args.vocab, args.code_dim)])
    bert = BertForMaskedLM(
        BertConfig(
            vocab_size=args.vocab,
            hidden_size=args.hidden,
            num_hidden_layers=args.layers,
            num_attention_heads=args.heads,
            intermediate_size=args.intermediate,
            max_position_embeddings=max(512, args.length),
            attn_implementation="sdpa",
        )
    )
    return {"vqdna": ours.to(device).train(), "bert": bert.to(device).train()}


def make_batches(args, device: str, count: int) -> list[dict]:
    """``count`` batches of random codes with 25% masked positions; the same positions for both models."""
    import numpy as np
    import torch

    from vqdna.lm.pretrain import mask_positions

    rng = np.random.default_rng(args.seed)
    mask_id = args.vocab - 1  # BERT's [MASK]: codes are drawn below it
    batches = []
    for step in range(count):
        codes = torch.as_tensor(rng.integers(0, args.vocab - 1, (args.batch, args.length)), device=device)
        masked = torch.as_tensor(
            mask_positions(args.seed, step, np.arange(args.batch), args.length, args.mask_ratio), device=device
        )
        labels = torch.where(masked, codes, torch.full_like(codes, -100))
        attention = torch.ones_like(codes, dtype=torch.bool)
        batches.append(
            {
                "vqdna": {"input_ids": codes, "attention_mask": attention, "masked_positions": masked, "labels": labels},
                "bert": {"input_ids": torch.where(masked, torch.full_like(codes, mask_id), codes),
                         "attention_mask": attention.long(), "labels": labels},
            }
        )
    return batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--hidden", type=int, help="default: 256 on CPU, 768 on CUDA")
    parser.add_argument("--layers", type=int, help="default: 4 on CPU, 12 on CUDA")
    parser.add_argument("--heads", type=int, help="default: 4 on CPU, 12 on CUDA")
    parser.add_argument("--intermediate", type=int, help="default: 1024 on CPU, 3072 on CUDA")
    parser.add_argument("--vocab", type=int, default=512, help="codes of the one VQ level (default 512)")
    parser.add_argument("--code-dim", type=int, default=64, help="frozen code embedding dimension (default 64)")
    parser.add_argument("--length", type=int, default=512, help="tokens per sequence (default 512)")
    parser.add_argument("--batch", type=int, help="sequences per step (default: 8 on CPU, 64 on CUDA)")
    parser.add_argument("--steps", type=int, help="timed steps per model (default: 12 on CPU, 30 on CUDA)")
    parser.add_argument("--warmup", type=int, help="untimed steps per model first (default: 2 on CPU, 10 on CUDA)")
    parser.add_argument("--mask-ratio", type=float, default=0.25)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's own)")
    parser.add_argument("--peak-tflops", type=float, default=None,
                        help="device peak TFLOP/s for MFU (CUDA default 989, H100 SXM dense bf16; CPU default: measured fp32 matmul)")
    parser.add_argument("--matmul-size", type=int, default=None, help="side of the peak-estimate matmul (default: 2048 CPU, 8192 CUDA)")
    parser.add_argument("--models", nargs="+", choices=["vqdna", "bert"], default=["vqdna", "bert"])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", type=Path, default=None, help="default benchmarks/results/pretrain_throughput_{device}.json")
    args = parse_args(parser, SMOKE)
    for key, value in SIZES[args.device].items():
        if getattr(args, key) is None:
            setattr(args, key, value)

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device visible")
    device = args.device
    cuda = device == "cuda"
    machine = machine_info(device, threads)
    matmul_size = args.matmul_size or (8192 if cuda else 2048)

    peak_runs = [matmul_tflops(device, matmul_size, dtype="bfloat16" if cuda else "float32")]
    print(json.dumps({"matmul_peak_estimate": peak_runs[-1]}), flush=True)

    models = build_models(args, device)
    models = {name: models[name] for name in args.models}
    optimizers = {
        name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=5e-4, weight_decay=0.01, betas=(0.9, 0.98))
        for name, m in models.items()
    }
    batches = make_batches(args, device, args.warmup + args.steps)

    seconds = {name: [] for name in models}
    peak_memory = {name: 0 for name in models}
    for i, batch in enumerate(batches):
        for name in models:  # the two models alternate step by step
            if cuda:
                torch.cuda.reset_peak_memory_stats()
            took = training_step(models[name], optimizers[name], batch[name], device)[0]
            if i >= args.warmup:
                seconds[name].append(took)
                if cuda:
                    peak_memory[name] = max(peak_memory[name], torch.cuda.max_memory_allocated())

    peak_runs.append(matmul_tflops(device, matmul_size, dtype="bfloat16" if cuda else "float32"))
    print(json.dumps({"matmul_peak_estimate": peak_runs[-1]}), flush=True)
    measured_peak = max(r["tflops"] for r in peak_runs)
    if args.peak_tflops is not None:
        peak, peak_source = args.peak_tflops, "--peak-tflops"
    elif cuda:
        peak, peak_source = 989.0, "H100 SXM dense bf16 (989 TFLOP/s), the default"
    else:
        peak, peak_source = measured_peak, f"measured: best fp32 torch.matmul {matmul_size}^3 on this CPU, {threads} threads"

    tokens = args.batch * args.length
    rows = []
    for name, model in models.items():
        n_matmul = matmul_params(model)
        flops = flops_per_token(n_matmul, args.layers, args.hidden, args.length)
        median = statistics.median(seconds[name])
        achieved = flops["total"] * tokens / median
        row = {
            "model": name,
            "class": type(model).__name__,
            "precision": "bf16 autocast" if cuda else "fp32",
            "attn_implementation": getattr(model.config, "_attn_implementation", None) or "sdpa",
            "params_total": sum(p.numel() for p in model.parameters()),
            "params_trainable": sum(p.numel() for p in model.parameters() if p.requires_grad),
            "params_matmul_N": n_matmul,
            "flops_per_token": flops,
            "tokens_per_step": tokens,
            "steps": len(seconds[name]),
            "step_seconds_median": round(median, 4),
            "step_seconds_min": round(min(seconds[name]), 4),
            "step_seconds_max": round(max(seconds[name]), 4),
            "tokens_per_second": round(tokens / median, 1),
            "tokens_per_second_best": round(tokens / min(seconds[name]), 1),
            "masked_tokens_per_second": round(tokens * args.mask_ratio / median, 1),
            "achieved_tflops": round(achieved / 1e12, 5),
            "peak_tflops": peak,
            "mfu": float(f"{achieved / (peak * 1e12):.4g}"),
            "mfu_best_step": float(f"{flops['total'] * tokens / min(seconds[name]) / (peak * 1e12):.4g}"),
        }
        if cuda:
            row["cuda_max_memory_allocated_gb"] = round(peak_memory[name] / 2**30, 3)
            row["goal_mfu"] = GOAL_MFU
            row["meets_goal"] = row["mfu"] >= GOAL_MFU
        rows.append(row)
        print(json.dumps(row), flush=True)
    if len(rows) == 2:
        ratio = rows[0]["tokens_per_second"] / rows[1]["tokens_per_second"]
        print(json.dumps({"vqdna_over_bert_tokens_per_second": round(ratio, 3)}), flush=True)

    output = args.output or REPO / "benchmarks" / "results" / f"pretrain_throughput_{device}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    machine["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {
        "machine": machine,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "flops_formula": FLOPS_FORMULA,
        "n_matmul_counts": N_MATMUL_DEFINITION,
        "tokens_counted": "every position of every sequence (batch * length per step)",
        "step": "forward (all-true attention mask, labels -100 where unmasked) + zero_grad + backward + clip_grad_norm_(1.0) + AdamW",
        "peak_tflops": peak,
        "peak_source": peak_source,
        "matmul_peak_estimates": peak_runs,
        "step_seconds": {name: [round(s, 4) for s in values] for name, values in seconds.items()},
        "results": rows,
    }
    if len(rows) == 2:
        result["vqdna_over_bert_tokens_per_second"] = round(rows[0]["tokens_per_second"] / rows[1]["tokens_per_second"], 3)
    if cuda:
        result["goal_mfu"] = GOAL_MFU
    output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
