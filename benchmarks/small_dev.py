"""Dev-split evidence for a config's fine-tuning settings (config/small.yaml by default): each variant scored on dev, never on test.

    snakemake --cores all --configfile config/small.yaml -- results/pretrain/vq_bert/model.safetensors \
        results/dataset_tokens/vq/mouse_tf_0/dev.parquet  # what the variants start from
    python benchmarks/small_dev.py --run vq_bert --datasets mouse_tf_0 \
        --variant lora '{}' --variant full '{"mode": "full", "learning_rate": 3e-4}'

Every variant is the config's own fine-tuning of ``--run`` on each dataset (its
datasets-sheet row, its ``finetune:`` block and the run's own ``finetune:`` keys)
with some keys changed: keys of ``FinetuneSettings`` (``mode``,
``learning_rate``, ``hidden_dropout``, ``lora``, ...) change the settings, keys
of the datasets sheet (``epochs``, ``batch_size``, ``warmup_steps``,
``max_length``) the dataset's row. ``learning_rate`` is a setting, not the
sheet's column: a run's own learning rate would hide the sheet's. Each runs
the pipeline's own ``finetune`` into a scratch folder; kept per variant,
dataset and seed: the best dev score, its epoch, the dev curve and the
training time. The test scores ``finetune`` also computes are dropped
unread: a setting chosen here is chosen on dev alone.

Rows accumulate in ``--output`` (default ``benchmarks/results/small/dev_grid.json``):
a (run, dataset, variant, seed) already there is not run again, so the grid can
grow over several sittings; a variant name given again with other keys is an error.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
import time
from pathlib import Path

import yaml

from vqdna.datasets.spec import DatasetSpec
from vqdna.finetune.train import FinetuneSettings, finetune
from vqdna.plan import build_plan

REPO = Path(__file__).resolve().parents[1]
SHEET_KEYS = ("epochs", "batch_size", "warmup_steps", "max_length")


def variant_inputs(plan, run: str, dataset: str, changes: dict) -> tuple[DatasetSpec, dict]:
    """The dataset spec and fine-tuning settings of ``run`` on ``dataset``, with ``changes`` applied."""
    unknown = set(changes) - set(SHEET_KEYS) - set(FinetuneSettings.__dataclass_fields__)
    if unknown:
        raise SystemExit(f"variant keys {sorted(unknown)}: neither fine-tuning settings nor datasets-sheet columns {SHEET_KEYS}")
    spec = {**plan.datasets[dataset].finetune_spec, **{k: v for k, v in changes.items() if k in SHEET_KEYS}}
    settings = {**plan.finetune_settings_of(run), **{k: v for k, v in changes.items() if k not in SHEET_KEYS}}
    return DatasetSpec(**spec), json.loads(json.dumps(settings, default=dict))


def dataset_source(results: Path, tokenizer: str, dataset: str, changes: dict) -> Path:
    """The workflow's dataset tokens where they hold what the variant reads (not when it cuts sequences
    to another ``max_length``), else the prepared dataset, encoded in process."""
    tokens = results / "dataset_tokens" / tokenizer / dataset
    return tokens if "max_length" not in changes and (tokens / "train.parquet").is_file() else results / "datasets" / dataset


def dev_row(result: dict, run: str, variant: str, changes: dict, seconds: float) -> dict:
    """What is kept of a fine-tuning: dev only."""
    metric = result["metric"]
    return {
        "run": run, "dataset": result["dataset"], "variant": variant, "changes": changes, "seed": result["seed"],
        "metric": metric, "best_dev": result["best_dev"], "best_epoch": result["best_epoch"],
        "dev_curve": [row[f"dev_{metric}"] for row in result["history"]],
        "train_loss": [row["train_loss"] for row in result["history"]],
        "mode": result["mode"], "seconds": round(seconds, 1),
    }


def _read_rows(path: Path) -> list[dict]:
    return json.loads(path.read_text())["rows"] if path.is_file() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, default=REPO / "config" / "small.yaml")
    parser.add_argument("--datasets-sheet", default=None, help="in place of the config's datasets sheet (e.g. local GUE folders)")
    parser.add_argument("--results", type=Path, default=Path("results"), help="the workflow's results folder")
    parser.add_argument("--run", required=True)
    parser.add_argument("--datasets", nargs="+", required=True)
    parser.add_argument("--variant", nargs=2, action="append", metavar=("NAME", "JSON"), required=True)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", type=Path, default=REPO / "benchmarks" / "results" / "small" / "dev_grid.json")
    args = parser.parse_args()

    config = yaml.safe_load(args.config.read_text())
    if args.datasets_sheet:
        config["datasets"] = args.datasets_sheet
    plan = build_plan(config, REPO / "workflow" / "schemas")
    run = plan.runs[args.run]
    pretrained = args.results / "pretrain" / (run.encoder_run or args.run)
    tokenizer = args.results / "tokenizers" / run.tokenizer

    rows = _read_rows(args.output)
    for name, text in args.variant:
        changes = json.loads(text)
        for row in rows:
            if row["variant"] == name and row["changes"] != changes:
                raise SystemExit(f"variant {name!r} is in {args.output} with other changes {row['changes']}: give it another name")
        for dataset in args.datasets:
            spec, settings = variant_inputs(plan, args.run, dataset, changes)
            for seed in args.seeds:
                if any((r["run"], r["dataset"], r["variant"], r["seed"]) == (args.run, dataset, name, seed) for r in rows):
                    continue
                scratch = Path(tempfile.mkdtemp(prefix="vqdna-dev-"))
                started = time.time()
                try:
                    result = finetune(
                        spec, settings, seed, pretrained, tokenizer, dataset_source(args.results, run.tokenizer, dataset, changes),
                        scratch / "run", threads=args.threads,
                    )
                finally:
                    shutil.rmtree(scratch)
                row = dev_row(result, args.run, name, changes, time.time() - started)
                print(json.dumps({k: row[k] for k in ("run", "dataset", "variant", "seed", "best_dev", "best_epoch", "dev_curve", "seconds")}))
                rows = _read_rows(args.output) + [row]  # read again: another sitting may have added rows meanwhile
                args.output.parent.mkdir(parents=True, exist_ok=True)
                args.output.write_text(json.dumps({"what": __doc__.splitlines()[0], "config": args.config.name, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
