"""Pretrained vs randomly initialised encoder under the same LoRA fine-tuning budget, on real GUE tasks.

    python benchmarks/pretrained_vs_random.py                                  # after the demo workflow
    python benchmarks/pretrained_vs_random.py --seeds 0 1 2 --epochs 5 --work-dir /tmp/pvr   # resumable

Two encoders of exactly the same configuration (``config.json`` of
``--pretrained``) are fine-tuned with the pipeline's own ``finetune``:

- pretrained: the masked-modelling encoder of ``--pretrained`` as it is;
- random: ``VqdnaForMaskedLM(config)`` built under a fixed torch seed (by default
  the pretrain run's own seed, the way ``pretrain`` builds its starting model),
  with the tokenizer's codebooks copied in as the frozen input embedding, so the
  two differ only in the weights above the codebooks (projection, transformer
  layers, final norm); it is saved with ``save_pretrained`` into the work dir.

Both get the same datasets (GUE CSV folders prepared with ``prepare_dataset``),
the same fine-tuning settings (LoRA r 8, alpha 16, dropout 0.05 on query, key,
value, dense, intermediate, output: the demo config's ``finetune:`` block), the
same epochs, batch, learning rate, warm-up and the same seeds. Reported: test
MCC, accuracy and macro F1 of the best-dev-MCC epoch, per dataset, seed and
encoder, and their means over seeds.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from machine import machine_info
from smoke import parse_args

REPO = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("VQDNA_TEST_DATA", REPO.parent / "shared" / "data"))
ENCODERS = ("pretrained", "random")
# --smoke: one epoch of one seed on 64 training rows of mouse/0 (its dev and test stay whole: 810 rows each);
# it still needs --tokenizer and --pretrained, which any tiny pretrained encoder serves
SMOKE = {"tasks": ["mouse_0"], "seeds": [0], "epochs": 1, "batch_size": 16, "warmup_steps": 1, "mouse_train_samples": 64,
         "threads": 1}

# GUE tasks used here: folder under $VQDNA_TEST_DATA/gue, sequence length, group (as in the paper's tables).
TASKS = {
    "prom_core_notata": {"folder": "prom/prom_core_notata", "max_length": 70, "group": "PROM", "num_labels": 2},
    "mouse_0": {"folder": "mouse/0", "max_length": 101, "group": "MOUSE", "num_labels": 2},
}

# The demo config's finetune: block (config/config.yaml).
FINETUNE_SETTINGS = {
    "lora": {
        "r": 8,
        "alpha": 16,
        "dropout": 0.05,
        "target_modules": ["query", "key", "value", "dense", "intermediate", "output"],
    }
}


def build_random_encoder(pretrained: Path, tokenizer_dir: Path, seed: int, out: Path) -> dict:
    """Same config as ``pretrained``, fresh weights under ``seed``, the tokenizer's codebooks copied in."""
    import torch

    from vqdna.finetune.train import weights_fingerprint
    from vqdna.lm.configuration import VqdnaConfig
    from vqdna.lm.modeling import VqdnaForMaskedLM
    from vqdna.tokenizer.api import load_tokenizer

    config = VqdnaConfig.from_pretrained(pretrained)
    tokenizer = load_tokenizer(tokenizer_dir, device="cpu")
    torch.manual_seed(seed)
    model = VqdnaForMaskedLM(config)
    model.vqdna.set_code_embeddings(tokenizer.codebook_tables())
    model.save_pretrained(out)  # always rewritten: deterministic, and a new tokenizer/pretrain must not meet a stale one

    # What differs between the two encoders: compare them tensor by tensor.
    trained = VqdnaForMaskedLM.from_pretrained(pretrained)
    fresh = VqdnaForMaskedLM.from_pretrained(out)
    a, b = trained.state_dict(), fresh.state_dict()
    if a.keys() != b.keys():
        raise SystemExit(f"{pretrained} and the random encoder have different tensors: {sorted(a.keys() ^ b.keys())}")
    identical = sorted(n for n in a if torch.equal(a[n], b[n]))
    differing = [n for n in a if n not in identical]
    return {
        "init_seed": seed,
        "config": {k: config.to_dict()[k] for k in ("vocab_sizes", "code_embedding_dim", "hidden_size", "num_hidden_layers",
                                                     "num_attention_heads", "intermediate_size", "tokenizer_hash")},
        # counted over VqdnaForMaskedLM's state dict; "encoder" = the vqdna.* part that fine-tuning loads (no MLM head)
        "masked_lm_parameters": sum(t.numel() for t in a.values()),
        "encoder_parameters": sum(t.numel() for n, t in a.items() if n.startswith("vqdna.")),
        "identical_tensors": identical,
        "encoder_differing_parameters": sum(a[n].numel() for n in differing if n.startswith("vqdna.")),
        "pretrained_weights_sha256": weights_fingerprint(dict(trained.named_parameters())),
        "random_weights_sha256": weights_fingerprint(dict(fresh.named_parameters())),
    }


def prepare(task: str, args, work: Path):
    from vqdna.datasets.prepare import prepare_dataset
    from vqdna.datasets.spec import DatasetSpec

    info = TASKS[task]
    subset = args.prom_train_samples if task == "prom_core_notata" else args.mouse_train_samples
    spec = DatasetSpec(
        dataset=task,
        task="classification",
        num_labels=info["num_labels"],
        max_length=info["max_length"],
        group=info["group"],
        metric="mcc",
        epochs=args.epochs,
        batch_size=args.batch_size,
        learning_rate=args.learning_rate,
        warmup_steps=args.warmup_steps,
        source=str(args.gue / info["folder"]),
        max_train_samples=subset or None,
        seed=0,
    )
    folder = work / "datasets" / task
    counts = prepare_dataset(spec, folder)
    return spec, folder, counts


def _budget(spec) -> dict:
    return {k: getattr(spec, k) for k in ("epochs", "batch_size", "learning_rate", "warmup_steps", "max_train_samples", "source")}


def run_one(spec, encoder: str, seed: int, encoder_dir: Path, fingerprint: str, args, dataset_dir: Path, work: Path) -> dict:
    from vqdna.finetune.train import finetune

    out = work / "finetune" / spec.dataset / encoder / f"seed{seed}"
    metrics_file = out / "metrics.json"
    reused, run = False, {}
    if metrics_file.is_file():  # reuse a finished run only if it fine-tuned these very weights with this budget
        result = json.loads(metrics_file.read_text())
        run_file = out / "run.json"
        run = json.loads(run_file.read_text()) if run_file.is_file() else {}
        reused = (
            result.get("base_weights_sha256") == fingerprint
            and result.get("lora") == FINETUNE_SETTINGS["lora"]
            and run.get("budget") == _budget(spec)
        )
    if not reused:
        load = round(os.getloadavg()[0], 2)
        started = time.time()
        result = finetune(spec, FINETUNE_SETTINGS, seed, encoder_dir, args.tokenizer, dataset_dir, out,
                          threads=args.threads, device="cpu")
        run = {"budget": _budget(spec), "wall_seconds": round(time.time() - started, 1), "threads": args.threads,
               "load_average_1min_at_start": load, "load_average_1min_at_end": round(os.getloadavg()[0], 2)}
        (out / "run.json").write_text(json.dumps(run) + "\n")
    row = {
        "dataset": spec.dataset,
        "encoder": encoder,
        "seed": seed,
        **{f"test_{k}": round(v, 4) for k, v in result["test"].items()},
        "best_epoch": result["best_epoch"],
        "best_dev_mcc": round(result["best_dev"], 4),
        "dev_mcc_per_epoch": [round(h["dev_mcc"], 4) for h in result["history"]],
        "train_loss_per_epoch": [round(h["train_loss"], 4) for h in result["history"]],
        "train_seconds": result["train_seconds"],  # finetune's own clock: training, dev scoring per epoch, test scoring
        "wall_seconds": run["wall_seconds"],  # the whole finetune call, encoding the three splits included
        "threads": run["threads"],
        "load_average_1min": [run["load_average_1min_at_start"], run["load_average_1min_at_end"]],
        "base_weights_sha256": result["base_weights_sha256"],
        "reused_from_work_dir": reused,
    }
    print(json.dumps(row), flush=True)
    return row


def summarise(rows: list[dict]) -> list[dict]:
    out = []
    for task in dict.fromkeys(r["dataset"] for r in rows):
        entry = {"dataset": task}
        for encoder in ENCODERS:
            mine = [r for r in rows if r["dataset"] == task and r["encoder"] == encoder]
            for metric in ("mcc", "accuracy", "f1"):
                values = [r[f"test_{metric}"] for r in mine]
                entry[f"{encoder}_{metric}_mean"] = round(statistics.mean(values), 4) if values else None
                entry[f"{encoder}_{metric}_sd"] = round(statistics.stdev(values), 4) if len(values) > 1 else None
            entry[f"{encoder}_seeds"] = [r["seed"] for r in mine]
        pairs = {r["seed"]: r["test_mcc"] for r in rows if r["dataset"] == task and r["encoder"] == "pretrained"}
        diffs = [pairs[r["seed"]] - r["test_mcc"] for r in rows
                 if r["dataset"] == task and r["encoder"] == "random" and r["seed"] in pairs]
        entry["mcc_pretrained_minus_random_per_seed"] = [round(d, 4) for d in diffs]
        entry["mcc_pretrained_minus_random_mean"] = round(statistics.mean(diffs), 4) if diffs else None
        out.append(entry)
        print(json.dumps(entry), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokenizer", type=Path, default=REPO / "results" / "tokenizers" / "vq512")
    parser.add_argument("--pretrained", type=Path, default=REPO / "results" / "pretrain" / "demo")
    parser.add_argument("--gue", type=Path, default=DATA / "gue", help="GUE CSV folders (default $VQDNA_TEST_DATA/gue)")
    parser.add_argument("--tasks", nargs="+", choices=list(TASKS), default=list(TASKS))
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1], help="fine-tuning seeds, the same for both encoders")
    parser.add_argument("--init-seed", type=int, default=None,
                        help="torch seed of the random encoder (default: the pretrain run's seed from its metrics.json, else 0)")
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--learning-rate", type=float, default=1e-3)
    parser.add_argument("--warmup-steps", type=int, default=20)
    parser.add_argument("--prom-train-samples", type=int, default=4000,
                        help="seeded subset of prom_core_notata's 42452 train rows (0: all); dev/test stay whole")
    parser.add_argument("--mouse-train-samples", type=int, default=0, help="subset of mouse/0's 6478 train rows (0: all)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    parser.add_argument("--work-dir", type=Path, default=None,
                        help="keep the random encoder, datasets and runs here and skip finished runs (default: a temp dir)")
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "pretrained_vs_random.json")
    args = parse_args(parser, SMOKE)
    # finetune's per-epoch log lines (dev metrics) on stderr, as `vqdna finetune` shows them
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)

    for path, what in ((args.tokenizer, "--tokenizer"), (args.pretrained, "--pretrained")):
        if not (path / "config.json").is_file():
            parser.error(f"{what} {path}: no config.json (run the demo workflow first: snakemake --cores all)")
    args.threads = args.threads or os.cpu_count() or 1
    import torch

    torch.set_num_threads(args.threads)
    machine = machine_info("cpu", args.threads)
    pretrain_metrics_file = args.pretrained / "metrics.json"
    pretrain_metrics = json.loads(pretrain_metrics_file.read_text()) if pretrain_metrics_file.is_file() else {}
    if args.init_seed is None:
        args.init_seed = int(pretrain_metrics.get("run_config", {}).get("seed", 0))

    started = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work_dir or Path(tmp)
        random_dir = work / f"random_encoder_seed{args.init_seed}"
        encoders_info = build_random_encoder(args.pretrained, args.tokenizer, args.init_seed, random_dir)
        print(json.dumps({k: v for k, v in encoders_info.items() if k != "config"}), flush=True)
        encoder_dirs = {"pretrained": args.pretrained, "random": random_dir}
        fingerprints = {"pretrained": encoders_info["pretrained_weights_sha256"], "random": encoders_info["random_weights_sha256"]}

        prepared = {}
        for task in args.tasks:
            spec, folder, counts = prepare(task, args, work)
            prepared[task] = (spec, folder)
            print(json.dumps({"dataset": task, "rows": counts, "max_length": spec.max_length}), flush=True)
            prepared[task] += (counts,)

        rows = []
        for seed in args.seeds:  # seed-major, so an interrupted run still holds complete pairs
            for task in args.tasks:
                spec, folder, _ = prepared[task]
                for encoder in ENCODERS:
                    rows.append(run_one(spec, encoder, seed, encoder_dirs[encoder], fingerprints[encoder], args, folder, work))
        summary = summarise(rows)

    machine["load_average_1_5_15_at_end"] = [round(x, 2) for x in os.getloadavg()]
    result = {
        "machine": machine,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "finetune_settings": FINETUNE_SETTINGS,
        "datasets": {task: {"source": str(args.gue / TASKS[task]["folder"]), "rows": prepared[task][2],
                            "max_length": TASKS[task]["max_length"]} for task in args.tasks},
        "pretrained_encoder": {
            "folder": str(args.pretrained),
            "steps": pretrain_metrics.get("steps"),
            "train_sequences": pretrain_metrics.get("train_sequences"),
            "heldout_masked_accuracy": pretrain_metrics.get("heldout_masked_accuracy"),
            "heldout_baselines": pretrain_metrics.get("heldout_baselines"),
        },
        "encoders": encoders_info,
        "total_seconds": round(time.time() - started, 1),  # this invocation (runs reused from --work-dir cost ~0)
        "finetune_wall_seconds_sum": round(sum(r["wall_seconds"] for r in rows), 1),  # the runs themselves, when first made
        "results": rows,
        "summary": summary,
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
