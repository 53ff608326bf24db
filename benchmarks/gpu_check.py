"""The prepared GPU check: the whole GPU path run, and measured, in one command of at most 4 minutes.

    PYTHONPATH=. python3 benchmarks/gpu_check.py OUTDIR --fasta lambda_virus.fa GCF_000005845.2_ASM584v2_genomic.fna.gz
    PYTHONPATH=. python3 benchmarks/gpu_check.py OUTDIR --smoke     # CPU, tiny sizes: what CI runs

GPU time is rare and short, so the check is built to fail fast and to keep
whatever it measured. A preflight (at most 20 s) imports the GPU path, checks
that CUDA is visible and measures the bf16 matmul peak; then four sections run
in order of value, each in a process of its own under its own time cap, and
``OUTDIR/gpu_check.json`` and ``OUTDIR/gpu_check.md`` are rewritten after every
section (and after every measurement inside one), so a run cut short keeps
what it measured. Nothing here needs pysam or Snakemake, which a bare GPU
machine lacks: windows are cut from the FASTA files with pyarrow alone
(:class:`vqdna.genome.FastaRecords`).

Sections:

- ``smoke``: every ``vqdna`` stage in-process on the device at tiny sizes, on
  the real code paths: windows, tokenizer training (VQ, HRQ, k-mer) and
  evaluation, token files, pretraining (with a checkpoint), a genome
  classification dataset, LoRA fine-tuning (gradient checkpointing on, as
  ``config/reproduce.yaml`` sets it), a linear probe on encoder features,
  ``predict`` (checked against fine-tuning's own test predictions) and
  ``embed``; on a GPU also the codes of the device against the CPU's. A
  device-only bug (dtype, placement, autocast) fails here, named by stage.
- ``encode``: the paper-size VQ-VAE and HRQ of ``config/reproduce.yaml``,
  first trained a few steps by ``train_tokenizer`` at the config's batch (the
  step time, and from it the stage's GPU-hours), then encoding 512-nt windows
  in fp32 and bf16: nt/s, the fraction of codes bf16 and fp32 agree on, and
  the fraction of the spec-sheet dense bf16 peak reached (the project's FLOPs
  per nt x nt/s / peak), with the measured matmul peak beside it; then the
  encoder compiled (``compile: tokenizer: reduce-overhead``): compile seconds,
  eager against compiled nt/s, code agreement, and whether the compile pays
  for one human genome (with ``--smoke``: the VQ-VAE only, the smallest size).
- ``pretrain``: the paper-size encoder (BERT-base shape) at 512 tokens in bf16,
  at the per-GPU micro-batch of ``config/reproduce.yaml``: tokens/s and MFU of
  ``VqdnaForMaskedLM`` beside transformers' ``BertForMaskedLM`` of the same
  shape and attention kernel (SDPA; whether the flash kernel serves each is
  checked), and the step as ``vqdna pretrain`` takes it (masks drawn on the
  host) beside the bare model step; then that step compiled (``compile:
  pretrain: reduce-overhead``): compile seconds, eager against compiled step,
  and whether the compile pays over the config's steps (not with ``--smoke``:
  the encode section's compile covers the code path on the CPU).
- ``finetune``: LoRA fine-tuning of that encoder: step time and peak memory at
  1k, 8k and 32k nt (one code per nt), then the long-context species inputs of
  250k and 450k nt through a stride-8 tokenizer (``VQConfig(stride=8)``: 31,250
  and 56,250 tokens), then 250k nt at stride 1 if its predicted step fits the
  time left.

Multi-GPU DDP (NCCL all-reduce, one process per GPU, several nodes) cannot be
checked on one GPU: the output says so.

Every number a section measures goes into the JSON; ``--smoke`` runs the
same code on the CPU at tiny sizes (about a minute on two cores).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import asdict
from datetime import datetime, timezone
from pathlib import Path
from types import SimpleNamespace

from finetune_memory import is_out_of_memory
from machine import git_commit

REPO = Path(__file__).resolve().parents[1]
REPRODUCE_CONFIG = REPO / "config" / "reproduce.yaml"
SECTIONS = ("smoke", "encode", "pretrain", "finetune")  # in order of value
# Seconds per section on an H100/H200-class GPU, start-up of its process included; the preflight takes at
# most 20 s, so the whole check ends within 240 s.
GPU_CAPS_S = {"smoke": 45, "encode": 55, "pretrain": 50, "finetune": 70}
CPU_CAPS_S = {"smoke": 120, "encode": 120, "pretrain": 120, "finetune": 120}
PREFLIGHT_CAP_S = 20
GOALS = {"encode_fraction_of_spec_peak": 0.50, "pretrain_mfu": 0.45, "finetune_32k_within_gb": 80}
# Dense bf16 tensor-core peaks (no sparsity), TFLOP/s, from the vendors' spec sheets; the first match of the
# device name wins (GH200 before H200, the PCIe and NVL H100 before the SXM one).
SPEC_BF16_TFLOPS = (
    ("GH200", 989.4),
    ("H200", 989.4),
    ("H100 PCIe", 756.5),
    ("H100 NVL", 835.5),
    ("H100", 989.4),
    ("A100", 312.0),
    ("L40S", 362.1),
)
NOT_CHECKED = [
    "multi-GPU DDP: NCCL all-reduce of gradients and codebook statistics, one process per GPU, several nodes "
    "(config/reproduce.yaml pretrains on 8 GPUs per run); one GPU cannot host two NCCL ranks, so CPU tests "
    "(gloo, tests/test_ddp.py) and the two-node SLURM test are the evidence for that path",
    "resuming pretraining from a checkpoint on the GPU (checkpoints are written here; resuming is tested on the CPU)",
]


# -- shared helpers ----------------------------------------------------------------------------------------


def spec_peak_tflops(device_name: str) -> float | None:
    for key, tflops in SPEC_BF16_TFLOPS:
        if key.lower() in device_name.lower():
            return tflops
    return None


def write_atomic(path: Path, text: str) -> None:
    """The file appears under ``path`` only once complete (a reader never sees half a report)."""
    from vqdna.artifacts import atomic_path

    with atomic_path(path) as tmp:
        tmp.write_text(text)


def genome_name(path: Path) -> str:
    name = path.name
    for suffix in (".gz", ".fa", ".fasta", ".fna", ".fas"):
        name = name.removesuffix(suffix)
    return re.sub(r"[^A-Za-z0-9_]", "_", name)


def synthetic_genomes(folder: Path, length: int = 60_000, seed: int = 0) -> list[Path]:
    """Two random genomes told apart by composition (GC 40% and 60%), as FASTA: the default without ``--fasta``."""
    import numpy as np

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for name, gc in (("synthetic_gc40", 0.4), ("synthetic_gc60", 0.6)):
        bases = rng.choice(list("ACGT"), length, p=[(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
        sequence = "".join(bases)
        path = folder / f"{name}.fa"
        path.write_text(f">{name}\n" + "\n".join(sequence[i : i + 60] for i in range(0, length, 60)) + "\n")
        paths.append(path)
    return paths


def reproduce_plan() -> dict:
    import yaml

    return yaml.safe_load(REPRODUCE_CONFIG.read_text())


class Section:
    """A section's results, saved to its part file after every measurement (a process killed at its cap keeps them)."""

    def __init__(self, path: Path, ctx: SimpleNamespace):
        self.path, self.ctx = path, ctx
        self.data: dict = {"status": "running"}

    def save(self) -> None:
        write_atomic(self.path, json.dumps(self.data, indent=2) + "\n")

    def left(self) -> float:
        """Seconds left before this section's cap."""
        return self.ctx.deadline - time.time()

    @contextlib.contextmanager
    def stage(self, name: str):
        """One step of a section: timed, its status recorded; an error is recorded and ends the section."""
        record: dict = {"stage": name, "status": "running"}
        self.data.setdefault("stages", []).append(record)
        started = time.perf_counter()
        try:
            yield record
        except BaseException as error:
            record.update(status="error", error=f"{type(error).__name__}: {error}"[:2000], traceback=traceback.format_exc()[-4000:])
            raise
        else:
            record["status"] = "ok"
        finally:
            record["seconds"] = round(time.perf_counter() - started, 3)
            self.save()


def device_memory_gb(device: str) -> float | None:
    if not device.startswith("cuda"):
        return None
    import torch

    return round(torch.cuda.max_memory_allocated() / 2**30, 3)


def reset_device_memory(device: str) -> None:
    if device.startswith("cuda"):
        import torch

        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


# -- section: smoke -----------------------------------------------------------------------------------------

SMOKE_WINDOW = 128
SMOKE_MAX_NT = 200_000  # per genome: the smoke checks that stages run, so E. coli's first 200 kb do
SMOKE_TOKENIZERS = {
    "vq": {"type": "vq", "codebook_size": 64, "width": 32, "depth": 2},
    "hrq": {"type": "hrq", "codebook_size": 16, "width": 32, "depth": 2, "taps": [1, 2]},
    "kmer6": {"type": "kmer", "k": 6, "overlapping": True},
}
SMOKE_TRAINING = {"steps": 12, "batch_size": 64, "crop_length": 64, "learning_rate": 3e-3, "warmup_steps": 2,
                  "restart_free_steps": 4, "log_every": 4}
SMOKE_ENCODER = {"hidden_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4, "intermediate_size": 128}
SMOKE_RUN = {"encoder": SMOKE_ENCODER, "steps": 6, "batch_size": 16, "max_length": 64, "learning_rate": 1e-3,
             "warmup_steps": 1, "log_every": 2, "checkpoint_every": 3, "heldout_windows": 64}
SMOKE_FINETUNE = {"lora": {"r": 8, "alpha": 16, "dropout": 0.05}, "gradient_checkpointing": True, "eval_batch_size": 64}


def section_smoke(section: Section) -> None:
    import numpy as np
    import pyarrow.parquet as pq

    from vqdna.datasets.prepare import prepare_dataset
    from vqdna.datasets.spec import DatasetSpec
    from vqdna.evaluation.probe import linear_probe
    from vqdna.finetune.train import finetune
    from vqdna.genome import FastaRecords
    from vqdna.lm.pretrain import pretrain
    from vqdna.predict import embed, predict
    from vqdna.tokenizer.api import load_tokenizer
    from vqdna.tokenizer.evaluate import evaluate_tokenizer, load_windows
    from vqdna.tokenizer.tokens import tokenize_windows
    from vqdna.tokenizer.train import train_tokenizer
    from vqdna.windows import WindowSettings, write_windows

    ctx, work = section.ctx, section.ctx.work / "smoke"
    device = ctx.device
    fastas = ctx.fastas or synthetic_genomes(work / "genomes")
    section.data.update(device=device, genomes=[str(p) for p in fastas], window_length=SMOKE_WINDOW)
    windows: dict[str, Path] = {}
    with section.stage("windows (FastaRecords + write_windows, no pysam)") as record:
        for path in fastas:
            name = genome_name(path)
            windows[name] = work / "windows" / f"{name}.parquet"
            whole = FastaRecords.read(path)
            first = FastaRecords({contig: whole.fetch(contig, 0, SMOKE_MAX_NT) for contig in whole.references}, label=str(path))
            counts = write_windows(first, windows[name], name, WindowSettings(length=SMOKE_WINDOW, step=SMOKE_WINDOW))
            record.setdefault("windows_per_split", {})[name] = counts
    window_files = list(windows.values())
    tokenizers = {name: work / "tokenizers" / name for name in SMOKE_TOKENIZERS}
    with section.stage("train_tokenizer (vq, hrq, kmer6)") as record:
        for name, settings in SMOKE_TOKENIZERS.items():
            training = SMOKE_TRAINING if settings["type"] in ("vq", "hrq") else {}
            summary = train_tokenizer(name, {**settings, **training}, window_files, tokenizers[name], device=device)
            record[name] = {"train_seconds": summary["train_seconds"], "restarts": summary.get("restarts")}
    with section.stage("evaluate_tokenizer (vq, hrq)") as record:
        for name in ("vq", "hrq"):
            result = evaluate_tokenizer(tokenizers[name], window_files, {"heldout_windows": 128, "probe_windows": 512},
                                        work / "metrics" / f"{name}.json")
            record[name] = [{k: level.get(k) for k in ("level", "reconstruction_accuracy", "usage", "perplexity")}
                            for level in result["levels"]]
    tokens: dict[str, list[Path]] = {}
    with section.stage("tokenize_windows") as record:
        for name in tokenizers:
            tokens[name] = []
            for genome, path in windows.items():
                tokens[name].append(work / "tokens" / name / f"{genome}.parquet")
                rows = tokenize_windows(tokenizers[name], name, path, tokens[name][-1], device=device)
                record[f"{name}/{genome}"] = rows
    if device != "cpu":
        with section.stage("codes: device (bf16) against CPU (fp32)") as record:
            heldout = load_windows(window_files, "test")[:256]
            for name in ("vq", "hrq"):
                on_cpu = load_tokenizer(tokenizers[name], device="cpu").encode_ids(heldout)
                on_device = load_tokenizer(tokenizers[name], device=device).encode_ids(heldout)
                record[f"{name}_agreement_per_level"] = [float((a == b).mean()) for a, b in zip(on_cpu, on_device)]
    pretrained = {name: work / "pretrain" / name for name in tokenizers}
    with section.stage("pretrain (vq, hrq, kmer6; a checkpoint at step 3)") as record:
        for name in tokenizers:
            result = pretrain(f"smoke_{name}", {"tokenizer": name, **SMOKE_RUN}, tokenizers[name], tokens[name], pretrained[name],
                              state_dir=work / "pretrain_state" / name, device=device)
            record[name] = {"final_loss": round(result["final_loss"], 4), "heldout_masked_accuracy": result["heldout_masked_accuracy"],
                            "heldout_baselines": result["heldout_baselines"]}
    spec = DatasetSpec(dataset="smoke_genomes", task="classification", num_labels=len(windows), max_length=100,
                       group="SPECIES", metric="mcc", epochs=2, batch_size=16, learning_rate=1e-3, warmup_steps=2,
                       genomes=",".join(windows), samples_per_genome=256)
    dataset_dir = work / "datasets" / spec.dataset
    with section.stage("prepare_dataset (genome classification)") as record:
        record["rows"] = prepare_dataset(spec, dataset_dir, windows)
    runs = {name: work / "finetune" / name for name in ("vq", "kmer6")}
    with section.stage("finetune (LoRA, gradient checkpointing; vq, kmer6)") as record:
        for name, run_dir in runs.items():
            result = finetune(spec, SMOKE_FINETUNE, 0, pretrained[name], tokenizers[name], dataset_dir, run_dir, device=device)
            record[name] = {"test": result["test"], "best_epoch": result["best_epoch"], "train_seconds": result["train_seconds"]}
    with section.stage("linear_probe (encoder features, vq)") as record:
        result = linear_probe(spec, dataset_dir, work / "probe", tokenizer_dir=tokenizers["vq"], pretrained_dir=pretrained["vq"],
                              features="encoder", device=device)
        record["test"] = result.get("test")
    test = pq.read_table(dataset_dir / "test.parquet")
    sequences, labels = test.column("sequence").to_pylist(), test.column("label").to_pylist()
    with section.stage("predict (against fine-tuning's own test predictions)") as record:
        csv_path = work / "inputs" / "test.csv"
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        csv_path.write_text("id,sequence,label\n" + "".join(f"{i},{s},{y}\n" for i, (s, y) in enumerate(zip(sequences, labels))))
        rows = predict(tokenizers["vq"], runs["vq"], csv_path, work / "outputs" / "predictions.parquet", device=device)
        ours = pq.read_table(work / "outputs" / "predictions.parquet")
        theirs = pq.read_table(runs["vq"] / "predictions.parquet")
        logits = np.stack(theirs.column("logits").to_numpy(zero_copy_only=False)).astype(np.float64)
        softmax = np.exp(logits - logits.max(1, keepdims=True))
        softmax /= softmax.sum(1, keepdims=True)
        probabilities = np.stack([ours.column(f"probability_{k}").to_numpy() for k in range(softmax.shape[1])], axis=1)
        record.update(
            rows=rows,
            prediction_agreement=float((ours.column("prediction").to_numpy() == theirs.column("prediction").to_numpy()).mean()),
            max_probability_difference=float(np.abs(probabilities - softmax).max()),
        )
        if record["prediction_agreement"] < 0.99:
            raise AssertionError(f"predict agrees with fine-tuning's test predictions on only {record['prediction_agreement']:.3f}")
    with section.stage("embed (pretrained encoder)") as record:
        fasta_path = work / "inputs" / "test.fa"
        fasta_path.write_text("".join(f">row{i}\n{s}\n" for i, s in enumerate(sequences)))
        rows = embed(tokenizers["vq"], pretrained["vq"], fasta_path, work / "outputs" / "embeddings.parquet", device=device)
        vectors = np.stack(pq.read_table(work / "outputs" / "embeddings.parquet").column("embedding").to_numpy(zero_copy_only=False))
        record.update(rows=rows, dimension=int(vectors.shape[1]), finite=bool(np.isfinite(vectors).all()))
        if not record["finite"] or rows != len(sequences):
            raise AssertionError(f"embed wrote {rows} rows for {len(sequences)} sequences, finite: {record['finite']}")
    section.data["peak_device_memory_gb"] = device_memory_gb(device)


# -- compile: does it pay? -----------------------------------------------------------------------------------


def compile_verdict(compile_seconds: float, eager_seconds: float, compiled_seconds: float, units_per_call: float, job_units: float,
                    unit: str, job: str) -> dict:
    """Compile seconds against the time a compiled job saves: gain per call x calls in ``job_units`` of work."""
    saved_per_call = eager_seconds - compiled_seconds
    verdict = {"compile_seconds": round(compile_seconds, 2), "eager_seconds_per_call": round(eager_seconds, 5),
               "compiled_seconds_per_call": round(compiled_seconds, 5), "speedup": round(eager_seconds / compiled_seconds, 3),
               f"{unit}_per_call": units_per_call, "job": job}
    if saved_per_call <= 0:
        verdict.update(break_even=None, pays=False, why="compiled is not faster than eager here")
        return verdict
    calls = job_units / units_per_call
    saved = calls * saved_per_call
    verdict.update(break_even=f"{compile_seconds / saved_per_call * units_per_call:,.0f} {unit}", job_seconds_saved=round(saved, 1),
                   pays=saved > compile_seconds,
                   why=f"saves {saved:,.0f} s against {compile_seconds:.0f} s of compile")
    return verdict


# -- section: encode -----------------------------------------------------------------------------------------


def section_encode(section: Section) -> None:
    import numpy as np
    import torch
    from timing import timed
    from tokenize_throughput import encoder_flops_per_nt

    from vqdna.genome import FastaRecords
    from vqdna.tokenizer.api import load_tokenizer, onehot
    from vqdna.tokenizer.train import split_config, train_tokenizer
    from vqdna.windows import WindowSettings, read_base_ids, write_windows

    ctx = section.ctx
    device, cuda, smoke = ctx.device, ctx.device.startswith("cuda"), ctx.smoke
    plan = reproduce_plan()
    length = plan["windows"]["length"]
    count = 16 if smoke else 4096
    work = ctx.work / "encode"
    fastas = ctx.fastas or synthetic_genomes(work / "genomes")
    window_files = [work / "windows" / f"{genome_name(path)}.parquet" for path in fastas]
    for path, windows_file in zip(fastas, window_files):  # the tokenizers train on every genome's train split
        write_windows(FastaRecords.read(path), windows_file, genome_name(path), WindowSettings(length=length, step=length))
    # Encoded: the first `count` windows, held-out splits first (repeated if the genomes have fewer).
    ids = np.concatenate([read_base_ids(f, split) for split in ("test", "dev", "train") for f in window_files])
    ids = np.resize(ids, (count, length)) if len(ids) < count else ids[:count]
    nucleotides = int(ids.size)
    section.data.update(windows=int(len(ids)), window_length=length, nucleotides=nucleotides, genomes=[str(p) for p in fastas],
                        spec_peak_tflops=ctx.spec_tflops, measured_peak_tflops=ctx.measured_tflops,
                        cudnn_allow_tf32=torch.backends.cudnn.allow_tf32, matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    section.save()
    for name in ("vq", "hrq"):
        entry = {k: v for k, v in plan["tokenizers"][name].items() if k != "train_genomes"}
        if smoke:
            entry.update(width=32, depth=2, code_dim=32, codebook_size=16, batch_size=8, **({"taps": [1, 2]} if name == "hrq" else {}))
        model_config, train_config, _ = split_config(name, entry)
        record: dict = {"tokenizer": name, "config": asdict(model_config), "flops_per_nt": encoder_flops_per_nt(model_config)}
        section.data.setdefault("tokenizers", []).append(record)
        reset_device_memory(device)
        # 1. a few real training steps at the config's batch: a data-initialised codebook, and the step time.
        steps, log_every = (4, 2) if smoke else (12, 4)
        for batch_size in dict.fromkeys([train_config.batch_size, max(1, train_config.batch_size // 4)]):
            folder = work / "tokenizers" / f"{name}_batch{batch_size}"
            settings = {**entry, "batch_size": batch_size, "steps": steps, "log_every": log_every, "warmup_steps": 1, "restart_free_steps": 0}
            try:
                train_tokenizer(name, settings, window_files, folder, device=device)
            except (RuntimeError, MemoryError) as error:
                if not is_out_of_memory(error):
                    raise
                record.setdefault("training_out_of_memory_at_batch", []).append(batch_size)
                reset_device_memory(device)
                continue
            curves = [line.split(",") for line in (folder / "curves.csv").read_text().splitlines()]
            seconds_column = curves[0].index("seconds")
            first, last = float(curves[1][seconds_column]), float(curves[-1][seconds_column])
            step_seconds = (last - first) / (steps - log_every)
            record["training"] = {
                "batch_size": batch_size, "crop_length": train_config.crop_length or length, "steps_timed": steps - log_every,
                "step_seconds": round(step_seconds, 4), "config_steps": train_config.steps,
                "config_gpu_hours_at_this_rate": round(step_seconds * train_config.steps * train_config.batch_size / batch_size / 3600, 2),
                "peak_device_memory_gb": device_memory_gb(device),
            }
            break
        section.save()
        if "training" not in record:
            raise RuntimeError(f"{name}: training ran out of memory at every batch tried")
        tokenizer = load_tokenizer(folder, device=device)
        flops = record["flops_per_nt"]["total"]
        ids_on_device = torch.as_tensor(ids, device=device)

        @torch.no_grad()
        def encode_fp32(batch):  # encode_ids without its autocast: the fp32 reference, same host <-> device copies
            with torch.autocast(device.split(":")[0], enabled=False):
                codes = tokenizer.model.encode(onehot(torch.as_tensor(batch, device=tokenizer.device)))
            return [c.cpu().numpy() for c in codes]

        @torch.no_grad()
        def encode_on_device(batch):  # the model alone: input already on the device, codes left there
            with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=cuda):
                return tokenizer.model.encode(onehot(batch))

        bf16 = "bf16" if cuda else "fp32 (encode_ids autocasts on CUDA only)"
        paths = [  # (precision, what runs, encode, input, batch, keep the codes for the agreement)
            ("fp32", "encode_ids without autocast (host ids in, host codes out)", encode_fp32, ids, 256, True),
            (bf16, "encode_ids, as vqdna tokenize runs it", tokenizer.encode_ids, ids, 256, True),
            (bf16, "model only (ids on the device, codes left there)", encode_on_device, ids_on_device, 256, False),
            (bf16, "model only (ids on the device, codes left there)", encode_on_device, ids_on_device, 1024, False),
        ]
        codes = {}
        for precision, path, encode, data, batch_size, keep in paths:
            if section.left() < 5:
                record.setdefault("skipped_for_time", []).append(f"{precision} {path} batch {batch_size}")
                continue
            batches = [data[i : i + batch_size] for i in range(0, len(data), batch_size)]
            encode(batches[0])  # warm-up
            outputs: list = []

            def one_pass(encode=encode, batches=batches, outputs=outputs) -> None:
                outputs[:] = [encode(b) for b in batches]  # the last timed pass's codes stay

            seconds = timed(one_pass, device, 2)
            median = statistics.median(seconds)
            row = {"precision": precision, "path": path, "batch_size": batch_size, "seconds_per_pass": round(median, 4),
                   "nt_per_second": round(nucleotides / median), "achieved_tflops": round(flops * nucleotides / median / 1e12, 3)}
            if ctx.spec_tflops:
                row["fraction_of_spec_peak"] = round(flops * nucleotides / median / (ctx.spec_tflops * 1e12), 4)
            if ctx.measured_tflops:
                row["fraction_of_measured_peak"] = round(flops * nucleotides / median / (ctx.measured_tflops * 1e12), 4)
            if cuda and "fraction_of_spec_peak" in row:
                row["meets_goal"] = row["fraction_of_spec_peak"] >= GOALS["encode_fraction_of_spec_peak"]
            row["human_genome_seconds_at_this_rate"] = round(3.1e9 / row["nt_per_second"], 1)
            record.setdefault("encode", []).append(row)
            if keep:
                codes[path] = [np.concatenate([b[level] for b in outputs]) for level in range(tokenizer.num_levels)]
            section.save()
        if len(codes) == 2:
            reference, pipeline = codes.values()
            record["bf16_fp32_code_agreement_per_level"] = [round(float((a == b).mean()), 6) for a, b in zip(reference, pipeline)]
        record["peak_device_memory_gb"] = device_memory_gb(device)
        section.save()
        # 3. the encoder compiled, as `compile: tokenizer: reduce-overhead` runs it (on the CPU: inductor, no CUDA
        # graphs). With --smoke once, for the VQ-VAE at this size: a cold inductor compile is tens of seconds on 2 cores.
        if smoke and name != "vq":
            record["compile"] = {"status": "skipped with --smoke: the VQ-VAE's compile covers the code path"}
        elif section.left() < (30 if cuda else 60):
            record["compile"] = {"status": "skipped: too little of the section's time left for a compile"}
        else:
            from vqdna.tokenizer.compiled import CompiledCall

            mode = "reduce-overhead" if cuda else "default"
            batch_size = 1024 if cuda else 256
            batches = [ids_on_device[i : i + batch_size] for i in range(0, len(ids_on_device), batch_size)]
            compiled = CompiledCall(tokenizer.model.encode, mode, device.split(":")[0], f"gpu_check {name} encode", pad_batch=True)

            @torch.no_grad()
            def encode_with(encode, batch):
                with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=cuda):
                    return encode(onehot(batch))

            encode_with(compiled, batches[0])  # compiles (and records the CUDA graph)
            outputs: dict = {}

            def one_pass(encode, key) -> None:
                outputs[key] = [encode_with(encode, b) for b in batches]

            # tokenizer.model.encode is the eager one (the mode is not set here: CompiledCall wraps, not replaces, it)
            eager_seconds = statistics.median(timed(lambda: one_pass(tokenizer.model.encode, "eager"), device, 2))
            compiled_seconds = statistics.median(timed(lambda: one_pass(compiled, "compiled"), device, 2))
            agreement = [round(float(np.mean([(a[level] == b[level]).float().mean().item() for a, b in zip(outputs["eager"], outputs["compiled"])])), 6)
                         for level in range(tokenizer.num_levels)]
            record["compile"] = {
                "status": "ok", "mode": mode, "batch_size": batch_size, "shapes_compiled": [list(s[0]) for s in compiled.shapes],
                "eager_nt_per_second": round(nucleotides / eager_seconds), "compiled_nt_per_second": round(nucleotides / compiled_seconds),
                "code_agreement_per_level": agreement,
                **compile_verdict(compiled.compile_seconds, eager_seconds, compiled_seconds, nucleotides, 3.1e9, "nt", "one human genome (3.1e9 nt)"),
            }
        section.save()


# -- section: pretrain ---------------------------------------------------------------------------------------


def encoder_shape(encoder: dict, tokenizer: dict, **extra) -> SimpleNamespace:
    """The sizes the benchmarks' model builders take, from a run's ``encoder`` block (VqdnaConfig defaults: BERT-base)."""
    from vqdna.lm.configuration import VqdnaConfig

    config = VqdnaConfig(**encoder)
    return SimpleNamespace(hidden=config.hidden_size, layers=config.num_hidden_layers, heads=config.num_attention_heads,
                           intermediate=config.intermediate_size, vocab=tokenizer["codebook_size"],
                           code_dim=tokenizer.get("code_dim") or tokenizer["width"], seed=0, **extra)


def flash_attention_check(model, inputs: dict, device: str) -> dict:
    """Forward and backward with SDPA restricted to the flash kernel: an error means some attention call cannot use it."""
    import torch
    from torch.nn.attention import SDPBackend, sdpa_kernel

    try:
        with sdpa_kernel([SDPBackend.FLASH_ATTENTION]), torch.autocast("cuda", dtype=torch.bfloat16):
            model(**inputs).loss.backward()
    except RuntimeError as error:
        return {"flash_attention": False, "error": str(error).splitlines()[0][:300]}
    finally:
        model.zero_grad(set_to_none=True)
    return {"flash_attention": True}


def section_pretrain(section: Section) -> None:
    import numpy as np
    import torch
    from pretrain_throughput import (
        build_models,
        flops_per_token,
        make_batches,
        matmul_params,
    )
    from timing import synchronize, training_step

    from vqdna.lm.corpus import Codes
    from vqdna.lm.pretrain import PretrainConfig, Process, train_step

    ctx = section.ctx
    device, cuda, smoke = ctx.device, ctx.device.startswith("cuda"), ctx.smoke
    plan = reproduce_plan()
    run = plan["runs"]["vq_bert"]
    tokenizer = plan["tokenizers"][run["tokenizer"]]
    ranks = run.get("gpus", 1) * run.get("nodes", 1)
    micro_batch = run["batch_size"] // (ranks * run.get("grad_accum_steps", 1))
    shape = encoder_shape(run.get("encoder", {}), tokenizer, length=run.get("max_length") or plan["windows"]["length"],
                          mask_ratio=run["mask_ratio"], batch=micro_batch)
    warmup, steps = (3, 8) if cuda else (1, 2)
    if smoke:
        shape.__dict__.update(hidden=64, layers=2, heads=4, intermediate=128, length=64, batch=4)
    section.data.update(shape=dict(vars(shape)), micro_batch_source=f"config/reproduce.yaml runs.vq_bert: batch_size {run['batch_size']} / "
                        f"({ranks} GPUs x grad_accum_steps {run.get('grad_accum_steps', 1)})",
                        spec_peak_tflops=ctx.spec_tflops, measured_peak_tflops=ctx.measured_tflops)
    models = optimizers = batches = None
    while shape.batch >= 1:
        try:
            reset_device_memory(device)
            models = build_models(shape, device)
            optimizers = {name: torch.optim.AdamW([p for p in m.parameters() if p.requires_grad], lr=5e-4, weight_decay=0.01,
                                                  betas=(0.9, 0.98)) for name, m in models.items()}
            batches = make_batches(shape, device, warmup + steps)
            seconds = {name: [] for name in models}
            memory = {}
            for i, batch in enumerate(batches):
                for name in models:  # the two models alternate step by step, so a change in clocks falls on both
                    reset_device_memory(device)
                    took = training_step(models[name], optimizers[name], batch[name], device)[0]
                    if i >= warmup:
                        seconds[name].append(took)
                    memory[name] = device_memory_gb(device)
            break
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            section.data.setdefault("out_of_memory_at_micro_batch", []).append(shape.batch)
            models = optimizers = batches = None
            shape.batch //= 2
    if models is None:
        raise RuntimeError("pretraining ran out of memory at every micro-batch tried")
    tokens = shape.batch * shape.length
    for name, model in models.items():
        n_matmul = matmul_params(model)
        flops = flops_per_token(n_matmul, shape.layers, shape.hidden, shape.length)
        median = statistics.median(seconds[name])
        achieved = flops["total"] * tokens / median
        row = {"model": name, "class": type(model).__name__, "micro_batch": shape.batch, "tokens_per_step": tokens,
               "params_matmul_N": n_matmul, "flops_per_token": flops["total"], "step_seconds": [round(s, 4) for s in seconds[name]],
               "tokens_per_second": round(tokens / median), "achieved_tflops": round(achieved / 1e12, 2),
               "peak_device_memory_gb": memory.get(name)}
        if ctx.spec_tflops:
            row["mfu_spec"] = round(achieved / (ctx.spec_tflops * 1e12), 4)
            row["meets_goal"] = row["mfu_spec"] >= GOALS["pretrain_mfu"]
        if ctx.measured_tflops:
            row["mfu_measured_peak"] = round(achieved / (ctx.measured_tflops * 1e12), 4)
        section.data.setdefault("models", []).append(row)
    section.save()
    if cuda and section.left() > 10:
        small = make_batches(SimpleNamespace(**{**vars(shape), "batch": 2}), device, 1)[0]
        section.data["flash_attention"] = {name: flash_attention_check(models[name], small[name], device) for name in models}
        section.save()
    # The step as `vqdna pretrain` takes it: masks drawn on the host per step, the batch copied in, the loss
    # weighted by masked tokens; beside the model step above, this is the input pipeline's cost.
    if section.left() > 10:
        model, optimizer = models["vqdna"], optimizers["vqdna"]
        del models["bert"], optimizers["bert"], batches
        reset_device_memory(device)
        rng = np.random.default_rng(0)
        corpus = Codes(rng.integers(0, shape.vocab, (max(4 * shape.batch, 64), shape.length, 1)).astype(np.uint16),
                       np.full(max(4 * shape.batch, 64), shape.length))
        config = PretrainConfig(tokenizer="vq", batch_size=shape.batch, mask_ratio=shape.mask_ratio, steps=warmup + steps)
        trainable = [p for p in model.parameters() if p.requires_grad]
        pipeline_seconds = []
        for step in range(1, warmup + steps + 1):
            synchronize(device)
            started = time.perf_counter()
            optimizer.zero_grad(set_to_none=True)
            train_step(model, config, corpus, step, Process(rank=0, world=1, device=torch.device(device)))
            torch.nn.utils.clip_grad_norm_(trainable, 1.0)
            optimizer.step()
            synchronize(device)
            if step > warmup:
                pipeline_seconds.append(time.perf_counter() - started)
        median = statistics.median(pipeline_seconds)
        ours = section.data["models"][0]
        section.data["pipeline_step"] = {
            "what": "vqdna.lm.pretrain.train_step + clip + AdamW, masks drawn on the host (numpy) every step",
            "step_seconds": [round(s, 4) for s in pipeline_seconds], "tokens_per_second": round(tokens / median),
            "over_model_step": round(statistics.median(seconds["vqdna"]) / median, 3),
        }
        if ctx.spec_tflops:
            section.data["pipeline_step"]["mfu_spec"] = round(ours["flops_per_token"] * tokens / median / (ctx.spec_tflops * 1e12), 4)
        section.save()
        # The same step compiled, as `compile: pretrain: reduce-overhead` runs it: every batch one static shape.
        if smoke:
            section.data["compile"] = {"status": "skipped with --smoke: the encode section's compile covers the code path on the CPU"}
        elif section.left() < 25:
            section.data["compile"] = {"status": "skipped: too little of the section's time left for a compile"}
        else:
            mode = "reduce-overhead" if cuda else "default"
            from vqdna.compiling import torch_mode

            step_model = torch.compile(model, mode=torch_mode(mode, device.split(":")[0]), dynamic=False)
            compiled_seconds = []
            for step in range(1, warmup + steps + 2):
                if step > 2 and section.left() < 3:
                    break
                synchronize(device)
                started = time.perf_counter()
                optimizer.zero_grad(set_to_none=True)
                train_step(step_model, config, corpus, step, Process(rank=0, world=1, device=torch.device(device)), static_length=shape.length)
                torch.nn.utils.clip_grad_norm_(trainable, 1.0)
                optimizer.step()
                synchronize(device)
                compiled_seconds.append(time.perf_counter() - started)
            compiled_median = statistics.median(compiled_seconds[1:])
            section.data["compile"] = {
                "status": "ok", "mode": mode, "first_step_seconds": round(compiled_seconds[0], 2),
                "step_seconds": [round(s, 4) for s in compiled_seconds[1:]], "eager_tokens_per_second": round(tokens / median),
                "compiled_tokens_per_second": round(tokens / compiled_median),
                **compile_verdict(compiled_seconds[0] - compiled_median, median, compiled_median, 1, run["steps"], "steps",
                                  f"runs.vq_bert's {run['steps']:,} steps (per GPU)"),
            }
        section.save()


# -- section: finetune ---------------------------------------------------------------------------------------

# nt, tokenizer stride (nt per code: ceil(nt / stride) tokens), batch, steps. The strided species inputs come before
# 250k at stride 1: they cost a fraction of it, and they are what a long-context run would fine-tune on.
GPU_LENGTHS = ((1024, 1, 32, 3), (8192, 1, 8, 3), (32768, 1, 8, 2), (250_000, 8, 1, 1), (450_000, 8, 1, 1), (250_000, 1, 1, 1))
SMOKE_LENGTHS = ((128, 1, 4, 2), (256, 1, 2, 2), (2000, 8, 1, 1), (3600, 8, 1, 1), (1024, 1, 1, 1))  # 250 and 450 tokens at stride 8


def section_finetune(section: Section) -> None:
    import torch
    from finetune_memory import build_model, fit_cost_model, tokens_for
    from timing import training_step

    ctx = section.ctx
    device, cuda, smoke = ctx.device, ctx.device.startswith("cuda"), ctx.smoke
    plan = reproduce_plan()
    tokenizer = plan["tokenizers"][plan["runs"]["vq_bert"]["tokenizer"]]
    checkpointing = bool(plan["finetune"].get("gradient_checkpointing", False))
    shape = encoder_shape(plan["runs"]["vq_bert"].get("encoder", {}), tokenizer)
    if smoke:
        shape.__dict__.update(hidden=64, layers=2, heads=4, intermediate=128)
    section.data.update(shape=dict(vars(shape)), gradient_checkpointing=checkpointing,
                        lora="LoraSettings defaults (r 8, alpha 16, dropout 0.05, every linear layer of the encoder)",
                        batches="the species rows of config/reproduce/datasets.tsv: 32 at 1k nt, 8 at 20k and 32k; "
                                "1 at HyenaDNA's 250k and 450k",
                        strides="nt per code of the tokenizer (VQConfig.stride): the encoder runs on ceil(nt / stride) tokens")
    model, _ = build_model(shape, device, checkpointing, None)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4, weight_decay=0.01)
    weights_gb = device_memory_gb(device)
    per_sequence: dict[int, float] = {}  # tokens -> seconds per sequence of the last step
    generator = torch.Generator().manual_seed(0)
    for length, stride, batch, steps in SMOKE_LENGTHS if smoke else GPU_LENGTHS:
        tokens = tokens_for(length, stride)
        row: dict = {"length_nt": length, "stride": stride, "tokens": tokens, "batch": batch,
                     "attention_scores_if_materialised_gb_per_layer": round(batch * shape.heads * tokens**2 * 2 / 2**30, 1)}
        section.data.setdefault("lengths", []).append(row)
        if len(per_sequence) >= 2:  # time(T) = a T + b T^2 per sequence, least squares over every length measured so far
            fit = fit_cost_model(list(per_sequence.items()))
            longest_tokens, longest_seconds = max(per_sequence.items())
            predicted = fit["a_seconds_per_token"] * tokens + fit["b_seconds_per_token_squared"] * tokens**2
            # never below linear growth from the longest measured: the fit's T^2 term may come out small or negative
            row["predicted_step_seconds"] = round(batch * max(predicted, longest_seconds * tokens / longest_tokens), 1)
            if row["predicted_step_seconds"] * (steps + 0.5) > section.left() - 5:
                row["status"] = "skipped: predicted step longer than the time left"
                section.save()
                continue
        reset_device_memory(device)
        base = torch.cuda.memory_allocated() if cuda else 0
        input_ids = torch.randint(0, shape.vocab, (batch, tokens), generator=generator).to(device)
        inputs = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids, dtype=torch.bool),
                  "labels": torch.randint(0, 2, (batch,), generator=generator).to(device)}
        try:
            seconds = [training_step(model, optimizer, inputs, device)[0] for _ in range(steps)]
        except (RuntimeError, MemoryError) as error:
            if not is_out_of_memory(error):
                raise
            row.update(status="out_of_memory", error=str(error).splitlines()[0][:300])
        else:
            row.update(status="ok", step_seconds=[round(s, 3) for s in seconds], tokens_per_second=round(batch * tokens / seconds[-1]),
                       nt_per_second=round(batch * length / seconds[-1]))
            per_sequence[tokens] = seconds[-1] / batch
        if cuda:
            row["peak_memory_gb"] = round((torch.cuda.max_memory_allocated() - base) / 2**30, 2)
            if (length, stride) == (32768, 1) and row["status"] == "ok":  # the goal counts everything on the device, weights too
                row["meets_goal"] = torch.cuda.max_memory_allocated() / 2**30 <= GOALS["finetune_32k_within_gb"]
        del inputs, input_ids
        section.save()
    section.data["weights_and_optimizer_gb"] = weights_gb
    within = [r["length_nt"] for r in section.data["lengths"] if r.get("status") == "ok" and r["stride"] == 1]
    section.data["longest_length_measured"] = max(within) if within else None  # one code per nt, as before strides
    for row in section.data["lengths"]:
        if row.get("status") == "ok":
            per_stride = section.data.setdefault("longest_length_measured_per_stride", {})
            per_stride[str(row["stride"])] = max(per_stride.get(str(row["stride"]), 0), row["length_nt"])
    section.data["cost_model"] = fit_cost_model(list(per_sequence.items()))
    if cuda and section.left() > 10:
        ids = torch.randint(0, shape.vocab, (1, 1024), generator=generator).to(device)
        inputs = {"input_ids": ids, "attention_mask": torch.ones_like(ids, dtype=torch.bool), "labels": torch.zeros(1, dtype=torch.long, device=device)}
        section.data["flash_attention"] = flash_attention_check(model, inputs, device)
    longest = section.data["lengths"][-1]
    section.data["longest_length_note"] = (
        f"{longest['length_nt']:,} nt at stride {longest['stride']} ({longest['tokens']:,} tokens): {longest.get('status', 'not run')}"
        + (f", peak {longest['peak_memory_gb']} GB" if longest.get("peak_memory_gb") is not None else "")
        + ". Attention that materialises its scores needs heads x L^2 x 2 bytes per layer and sequence "
        f"({longest['attention_scores_if_materialised_gb_per_layer']:,} GB here): the paper's out-of-memory at 250k. "
        "SDPA's flash and memory-efficient kernels never hold the scores, so memory grows linearly with L and "
        "the quadratic cost is time, not memory."
    )


SECTION_FUNCTIONS = {"smoke": section_smoke, "encode": section_encode, "pretrain": section_pretrain, "finetune": section_finetune}


def run_section(args) -> int:
    """Child process: one section, its results saved to ``args.part`` as it goes."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    ctx = SimpleNamespace(device=args.device, smoke=args.smoke, fastas=[Path(p) for p in args.fasta], work=Path(args.work),
                          deadline=args.deadline, spec_tflops=args.spec_tflops, measured_tflops=args.measured_tflops)
    section = Section(Path(args.part), ctx)
    section.save()
    try:
        SECTION_FUNCTIONS[args.section](section)
    except BaseException as error:  # the stage (if any) has recorded its traceback
        section.data.update(status="error", error=f"{type(error).__name__}: {error}"[:2000])
        section.data.setdefault("traceback", traceback.format_exc()[-4000:])
        section.save()
        traceback.print_exc()
        return 1
    section.data["status"] = "ok"
    section.save()
    return 0


# -- preflight, the driver and the report ---------------------------------------------------------------------


def preflight(args) -> dict:
    """Imports of the GPU path, CUDA visible, a bf16 matmul to measure the peak; at most 20 s."""
    started = time.perf_counter()
    record: dict = {"status": "running"}
    imports = {}
    for module in ("torch", "transformers", "peft", "pyarrow", "safetensors", "tokenizers", "numpy", "sklearn", "yaml",
                   "vqdna.cli", "vqdna.windows", "vqdna.tokenizer.tokens", "vqdna.tokenizer.train", "vqdna.lm.pretrain",
                   "vqdna.finetune.train", "vqdna.evaluation.probe", "vqdna.predict"):
        t = time.perf_counter()
        try:
            loaded = importlib.import_module(module)
        except Exception as error:  # noqa: BLE001 (every failure is recorded)
            imports[module] = f"failed: {type(error).__name__}: {error}"
            continue
        imports[module] = getattr(loaded, "__version__", "ok") + f" ({time.perf_counter() - t:.1f} s)"
    record["imports"] = imports
    for optional in ("pysam", "snakemake"):
        try:
            importlib.import_module(optional)
            record[f"{optional}_importable"] = True
        except ImportError:
            record[f"{optional}_importable"] = False
    failed = [m for m, v in imports.items() if v.startswith("failed")]
    if failed:
        record.update(status="error", error=f"cannot import {', '.join(failed)}; run from the repository root with PYTHONPATH=.")
        return record
    import torch
    import transformers

    machine = {"python": sys.version.split()[0], "platform": platform.platform(), "cpu_count": os.cpu_count(),
               "torch": torch.__version__, "transformers": transformers.__version__, "cuda_runtime": torch.version.cuda,
               "device": args.device}
    if args.device.startswith("cuda"):
        if not torch.cuda.is_available():
            record.update(status="error", error="no CUDA device visible (torch.cuda.is_available() is False); use --smoke on a CPU")
            record["machine"] = machine
            return record
        properties = torch.cuda.get_device_properties(0)
        machine.update(gpu=properties.name, gpu_memory_gb=round(properties.total_memory / 2**30, 1),
                       compute_capability=f"{properties.major}.{properties.minor}", multiprocessors=properties.multi_processor_count,
                       gpus_visible=torch.cuda.device_count(), bf16_supported=torch.cuda.is_bf16_supported())
        try:
            smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True, text=True, timeout=5)
            machine["driver"] = smi.stdout.strip().splitlines()[0] if smi.returncode == 0 and smi.stdout.strip() else None
        except (OSError, subprocess.TimeoutExpired):
            machine["driver"] = None
        spec = args.spec_tflops or spec_peak_tflops(properties.name)
    else:
        machine["gpu"] = None
        spec = args.spec_tflops
    record["machine"] = machine
    from timing import matmul_tflops

    size = 8192 if args.device.startswith("cuda") else 256
    record["matmul"] = matmul_tflops(args.device, size, "bfloat16", repeats=10 if args.device.startswith("cuda") else 3, warmup=3)
    record["measured_peak_tflops"] = record["matmul"]["tflops"]
    record["spec_peak_tflops"] = spec
    record["spec_peak_source"] = ("--spec-tflops" if args.spec_tflops else "dense bf16 of the spec sheet, by device name") if spec else None
    if args.device.startswith("cuda"):
        torch.cuda.empty_cache()
    record["seconds"] = round(time.perf_counter() - started, 2)
    record["within_cap"] = record["seconds"] <= PREFLIGHT_CAP_S
    record["status"] = "ok"
    return record


def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def compile_line(what: str, data: dict | None, rate: str) -> str:
    """One sentence: compiled against eager, the compile's seconds, and whether it pays."""
    if not data:
        return f"{what} compiled: not measured."
    if data.get("status") != "ok":
        return f"{what} compiled: {data.get('status')}."
    key = "nt_per_second" if rate == "nt/s" else "tokens_per_second"
    return (f"{what} compiled ({data['mode']}): {_fmt(data[f'compiled_{key}'])} {rate} against {_fmt(data[f'eager_{key}'])} eager "
            f"(x{_fmt(data['speedup'])}), {_fmt(data['compile_seconds'])} s to compile; pays for {data['job']}: "
            f"{'yes' if data['pays'] else 'no'} ({data['why']}).")


def markdown(result: dict) -> str:
    """The JSON as a page a person reads: one table per section."""
    pre = result.get("preflight", {})
    machine = pre.get("machine", {})
    lines = [f"# VQDNA GPU check, {result['started_utc'][:10]}", "",
             f"Commit `{result['commit']}`; {machine.get('gpu') or 'CPU'}; driver {machine.get('driver') or '–'}; "
             f"torch {machine.get('torch', '–')} (CUDA {machine.get('cuda_runtime') or '–'}); transformers {machine.get('transformers', '–')}; "
             f"{'--smoke (tiny sizes)' if result['smoke'] else 'full sizes'}; total {_fmt(result.get('total_seconds'))} s.", "",
             "| section | status | seconds | cap (s) |", "|---|---|---|---|",
             f"| preflight | {pre.get('status', '–')} | {_fmt(pre.get('seconds'))} | {PREFLIGHT_CAP_S} |"]
    for name, section in result["sections"].items():
        lines.append(f"| {name} | {section.get('status')} | {_fmt(section.get('seconds'))} | {section.get('cap_s')} |")
    lines += ["", f"bf16 matmul peak measured: {_fmt(pre.get('measured_peak_tflops'))} TFLOP/s; spec-sheet dense bf16 peak: "
              f"{_fmt(pre.get('spec_peak_tflops'))} TFLOP/s.", ""]
    sections = result["sections"]
    if "smoke" in sections:
        lines += ["## smoke: every stage on the device", "", "| stage | status | seconds |", "|---|---|---|"]
        lines += [f"| {s['stage']} | {s['status']} | {_fmt(s.get('seconds'))} |" for s in sections["smoke"].get("stages", [])]
        errors = [s for s in sections["smoke"].get("stages", []) if s.get("status") == "error"]
        lines += [f"\nError in {s['stage']}: `{s['error']}`" for s in errors] + [""]
    if "encode" in sections:
        lines += ["## encode: paper-size tokenizers", "",
                  "| tokenizer | precision | path | batch | nt/s | TFLOP/s | of spec peak | of measured peak |", "|---|---|---|---|---|---|---|---|"]
        for record in sections["encode"].get("tokenizers", []):
            for row in record.get("encode", []):
                lines.append(f"| {record['tokenizer']} | {row['precision']} | {row['path']} | {row['batch_size']} | {_fmt(row['nt_per_second'])} | "
                             f"{_fmt(row['achieved_tflops'])} | {_fmt(row.get('fraction_of_spec_peak'))} | {_fmt(row.get('fraction_of_measured_peak'))} |")
        for record in sections["encode"].get("tokenizers", []):
            lines.append(compile_line(f"{record['tokenizer']} encoder", record.get("compile"), "nt/s"))
        for record in sections["encode"].get("tokenizers", []):
            training = record.get("training", {})
            lines.append(f"\n{record['tokenizer']}: bf16/fp32 code agreement per level {record.get('bf16_fp32_code_agreement_per_level', '–')}; "
                         f"training step {_fmt(training.get('step_seconds'))} s at batch {training.get('batch_size', '–')} "
                         f"({_fmt(training.get('config_gpu_hours_at_this_rate'))} GPU-hours for the config's {training.get('config_steps', '–')} steps).")
        lines.append("")
    if "pretrain" in sections:
        data = sections["pretrain"]
        lines += ["## pretrain: BERT-base shape, 512 tokens, bf16", "", "| model | micro-batch | tokens/s | TFLOP/s | MFU (spec) | MFU (measured peak) | memory GB |",
                  "|---|---|---|---|---|---|---|"]
        for row in data.get("models", []):
            lines.append(f"| {row['class']} | {row['micro_batch']} | {_fmt(row['tokens_per_second'])} | {_fmt(row['achieved_tflops'])} | "
                         f"{_fmt(row.get('mfu_spec'))} | {_fmt(row.get('mfu_measured_peak'))} | {_fmt(row.get('peak_device_memory_gb'))} |")
        if "pipeline_step" in data:
            p = data["pipeline_step"]
            lines.append(f"\n`vqdna pretrain`'s own step (host-side masks): {_fmt(p['tokens_per_second'])} tokens/s, "
                         f"{_fmt(p['over_model_step'])} of the bare model step's rate; MFU (spec) {_fmt(p.get('mfu_spec'))}.")
        if "compile" in data:
            lines.append("\n" + compile_line("`vqdna pretrain`'s step", data["compile"], "tokens/s"))
        if "flash_attention" in data:
            lines.append(f"\nFlash attention serves: {json.dumps(data['flash_attention'])}")
        lines.append("")
    if "finetune" in sections:
        lines += ["## finetune: LoRA, gradient checkpointing", "",
                  "| length (nt) | stride | tokens | batch | status | step s | tokens/s | peak GB |", "|---|---|---|---|---|---|---|---|"]
        for row in sections["finetune"].get("lengths", []):
            lines.append(f"| {row['length_nt']:,} | {row.get('stride', 1)} | {row.get('tokens', row['length_nt']):,} | {row['batch']} | "
                         f"{row.get('status', '–')} | {_fmt((row.get('step_seconds') or [None])[-1])} | "
                         f"{_fmt(row.get('tokens_per_second'))} | {_fmt(row.get('peak_memory_gb'))} |")
        for key in ("longest_length_note", "flash_attention"):
            if key in sections["finetune"]:
                value = sections["finetune"][key]
                lines.append(f"\n{key.replace('_', ' ').capitalize()}: {value if isinstance(value, str) else json.dumps(value)}")
        lines.append("")
    for name, section in sections.items():
        if section.get("status") in ("error", "time_cap") and section.get("error"):
            lines.append(f"{name}: {section['status']}: `{section['error'][:500]}`\n")
    lines += ["## Not checked here", ""] + [f"- {item}" for item in result["not_checked"]] + [""]
    return "\n".join(lines)


def write_report(result: dict, outdir: Path) -> None:
    write_atomic(outdir / "gpu_check.json", json.dumps(result, indent=2) + "\n")
    write_atomic(outdir / "gpu_check.md", markdown(result))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("outdir", type=Path, help="gpu_check.json and gpu_check.md are written here")
    parser.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU (CI); implies --device cpu unless given")
    parser.add_argument("--device", default=None, help="cuda (default) or cpu")
    parser.add_argument("--fasta", nargs="+", default=[], help="small FASTA files (plain or gzip), one genome each; default: two synthetic genomes")
    parser.add_argument("--sections", nargs="+", choices=SECTIONS, default=list(SECTIONS))
    parser.add_argument("--budget-s", type=float, default=None, help="the whole check's limit (default 240 on a GPU, 600 with --smoke)")
    parser.add_argument("--caps", nargs="+", default=[], metavar="SECTION=SECONDS",
                        help=f"a section's time cap, e.g. finetune=90 (defaults on a GPU: {' '.join(f'{k}={v}' for k, v in GPU_CAPS_S.items())})")
    parser.add_argument("--spec-tflops", type=float, default=None, help="dense bf16 peak of the device (default: by its name)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's own)")
    parser.add_argument("--keep-work", action="store_true", help="keep the work folder (windows, tokenizers, models) and print its path")
    # internal: one section in a child process
    parser.add_argument("--section", choices=SECTIONS, help=argparse.SUPPRESS)
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--deadline", type=float, help=argparse.SUPPRESS)
    parser.add_argument("--measured-tflops", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    args.device = args.device or ("cpu" if args.smoke else "cuda")
    for path in args.fasta:
        if not Path(path).is_file():
            parser.error(f"--fasta {path}: no such file")
    if args.section:
        return run_section(args)

    started = time.time()
    budget = args.budget_s or (600.0 if args.smoke else 240.0)
    caps = dict(CPU_CAPS_S if args.smoke or args.device == "cpu" else GPU_CAPS_S)
    for item in args.caps:
        name, _, seconds = item.partition("=")
        if name not in SECTIONS or not seconds.replace(".", "", 1).isdigit():
            parser.error(f"--caps {item}: give SECTION=SECONDS with a section among {', '.join(SECTIONS)}")
        caps[name] = float(seconds)
    args.outdir.mkdir(parents=True, exist_ok=True)
    result = {"check": "vqdna benchmarks/gpu_check.py", "started_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
              "commit": git_commit(REPO), "argv": sys.argv[1:], "smoke": args.smoke, "budget_s": budget, "goals": GOALS,
              "not_checked": NOT_CHECKED, "sections": {}}
    result["preflight"] = preflight(args)
    result["total_seconds"] = round(time.time() - started, 1)
    write_report(result, args.outdir)
    print(json.dumps({"preflight": {k: v for k, v in result["preflight"].items() if k != "imports"}}), flush=True)
    if result["preflight"]["status"] != "ok":
        print(f"gpu_check: preflight failed: {result['preflight'].get('error')}", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="vqdna-gpu-check-"))
    try:
        for name in args.sections:
            cap = min(caps[name], budget - (time.time() - started))
            section_started = time.time()
            if budget - (time.time() - started) < 10:
                result["sections"][name] = {"status": "skipped", "error": "the check's time budget is spent", "cap_s": round(cap, 1)}
                write_report(result, args.outdir)
                continue
            part = work / f"{name}.json"
            command = [sys.executable, str(Path(__file__).resolve()), str(args.outdir), "--section", name, "--part", str(part),
                       "--work", str(work), "--deadline", str(section_started + cap), "--device", args.device,
                       "--measured-tflops", str(result["preflight"]["measured_peak_tflops"])]
            command += ["--smoke"] if args.smoke else []
            command += ["--fasta", *args.fasta] if args.fasta else []
            command += ["--spec-tflops", str(result["preflight"]["spec_peak_tflops"])] if result["preflight"]["spec_peak_tflops"] else []
            command += ["--threads", str(args.threads)] if args.threads else []
            print(f"gpu_check: section {name} (cap {cap:.0f} s)", flush=True)
            try:
                returncode = subprocess.run(command, timeout=cap).returncode
                status = None
            except subprocess.TimeoutExpired:
                returncode, status = None, "time_cap"
            data = json.loads(part.read_text()) if part.is_file() else {}
            if status == "time_cap":
                data.update(status="time_cap", error=f"stopped at its cap of {cap:.0f} s; what it measured before is kept")
            elif returncode != 0 and data.get("status") != "error":
                data.update(status="error", error=f"the section's process ended with code {returncode} (a crash: see the output above)")
            data.update(seconds=round(time.time() - section_started, 1), cap_s=round(cap, 1))
            result["sections"][name] = data
            result["total_seconds"] = round(time.time() - started, 1)
            write_report(result, args.outdir)
            print(json.dumps({"section": name, "status": data["status"], "seconds": data["seconds"]}), flush=True)
    finally:
        if args.keep_work:
            print(f"gpu_check: work folder kept at {work}", flush=True)
        else:
            shutil.rmtree(work, ignore_errors=True)
    result["total_seconds"] = round(time.time() - started, 1)
    write_report(result, args.outdir)
    print(f"gpu_check: {args.outdir / 'gpu_check.json'} and gpu_check.md written in {result['total_seconds']} s", flush=True)
    return 0 if all(s.get("status") == "ok" for s in result["sections"].values()) else 1


if __name__ == "__main__":
    sys.exit(main())
