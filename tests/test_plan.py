"""The workflow's plan (vqdna.plan): config and sheets in, jobs out, without Snakemake."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from vqdna import VqdnaError
from vqdna.plan import (
    AblationPoint,
    AnalysisJob,
    FinetuneJob,
    Plan,
    ProbeJob,
    build_plan,
    canonical_json,
)

REPO = Path(__file__).resolve().parents[1]
SCHEMAS = REPO / "workflow" / "schemas"

GENOME_COLUMNS = ["genome", "source", "sha256", "assembly_report", "description"]
DATASET_COLUMNS = [
    "dataset", "group", "task", "num_labels", "metric", "source", "genomes", "kind", "max_train_samples",
    "max_length", "learning_rate", "max_n_fraction", "train_from", "description", "runs",
]
GENOMES = [
    {"genome": "phage", "source": "https://example.org/phage.fa"},
    {"genome": "virus", "source": "genomes/virus.fa.gz", "description": "a local file"},
    {"genome": "mouse", "source": "https://example.org/mouse.fa", "assembly_report": "https://example.org/mouse.txt"},
]


def _tiles(name: str = "tiles", **cells) -> dict:
    """A genome-classification row: tiles of phage and virus."""
    return {"dataset": name, "group": "SPECIES", "task": "classification", "num_labels": 2, "metric": "mcc",
            "genomes": "phage,virus", "max_length": 64, "learning_rate": 3e-5, **cells}


@pytest.fixture(autouse=True)
def _in_a_workdir(tmp_path, monkeypatch):
    """The plan reads local sources and built genomes relative to the working directory, as Snakemake runs it."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "genomes").mkdir()
    (tmp_path / "genomes" / "virus.fa.gz").write_bytes(b"")


def _sheet(path: Path, columns: list[str], rows: list[dict], preamble: str = "") -> str:
    lines = ["\t".join(columns)] + ["\t".join(str(row.get(c, "")) for c in columns) for row in rows]
    path.write_text(preamble + "\n".join(lines) + "\n")
    return str(path)


def _config(tmp_path: Path, datasets: list[dict] | None = None, **keys) -> dict:
    return {
        "genomes": _sheet(tmp_path / "genomes.tsv", GENOME_COLUMNS, GENOMES),
        "datasets": _sheet(tmp_path / "datasets.tsv", DATASET_COLUMNS, datasets or [_tiles()]),
        "tokenizers": {"vq": {"type": "vq", "train_genomes": ["phage"], "codebook_size": 512, "heldout_windows": 64}},
        "runs": {"bert": {"tokenizer": "vq", "pretrain_genomes": ["phage", "virus"], "mask_ratio": 0.15}},
        "finetune": {"runs": ["bert"]},
        **keys,
    }


def _plan(config: dict) -> Plan:
    return build_plan(config, SCHEMAS)


def _error(config: dict) -> str:
    with pytest.raises(VqdnaError) as raised:
        _plan(config)
    message = str(raised.value)
    assert "\n" not in message
    return message


def test_the_schema_defaults_are_filled_in_and_the_config_is_left_as_it_was(tmp_path):
    config = _config(tmp_path, datasets=[_tiles("covid"), _tiles("tiles")])
    before = json.dumps(config, sort_keys=True)
    plan = _plan(config)
    assert json.dumps(config, sort_keys=True) == before
    assert plan.mirror == "" and dict(plan.archives) == {} and dict(plan.windows) == {}
    assert plan.finetune_seeds == (0,) and dict(plan.finetune_settings) == {}
    assert [job.dataset for job in plan.kmer_jobs] == ["covid", "tiles"]  # kmer_baseline.enabled: true
    assert plan.probe_jobs == (ProbeJob("vq", "covid"),)  # probe.datasets: [covid]
    assert plan.window_flags == ""


def test_a_sweep_value_equal_to_the_base_is_the_base_and_float_values_are_named_with_g(tmp_path):
    ablations = {
        "code_size": {"key": "codebook_size", "tokenizers": ["vq"], "values": [256, 512]},
        "mask_ratio": {"key": "mask_ratio", "runs": ["bert"], "values": [0.15, 0.3, 1e-5]},
    }
    plan = _plan(_config(tmp_path, ablations=ablations))
    assert list(plan.tokenizers) == ["vq", "vq_code_size256"]
    assert list(plan.runs) == ["bert", "bert_mask_ratio0.3", "bert_mask_ratio1e-05"]
    variant = plan.tokenizers["vq_code_size256"]
    assert variant.variant_of == "vq" and variant.settings["codebook_size"] == 256
    assert variant.ablation == (AblationPoint("code_size", 256),)
    assert plan.tokenizers["vq"].variant_of is None and plan.tokenizers["vq"].ablation == (AblationPoint("code_size", 512),)
    assert plan.runs["bert"].ablation == (AblationPoint("mask_ratio", 0.15),)
    assert plan.runs["bert_mask_ratio0.3"].settings["mask_ratio"] == 0.3
    assert plan.runs["bert_mask_ratio0.3"].variant_of == "bert"


def test_finetune_jobs_are_the_finetune_runs_on_every_dataset_then_sweep_runs_on_their_datasets(tmp_path):
    datasets = [_tiles("b"), _tiles("a"), _tiles("gone", genomes="", source=str(tmp_path / "nowhere"))]
    ablations = {
        "mask_ratio": {"key": "mask_ratio", "runs": ["bert"], "values": [0.15, 0.3], "datasets": ["b", "gone", "unknown"]},
        "steps": {"key": "steps", "runs": ["bert"], "values": [10]},  # no datasets: every dataset
    }
    plan = _plan(_config(tmp_path, datasets=datasets, ablations=ablations, finetune={"runs": ["bert"], "seeds": [0, 1]}))
    assert plan.finetune_jobs == (
        FinetuneJob("bert", "a", (0, 1)), FinetuneJob("bert", "b", (0, 1)),  # bert itself is fine-tuned once, on every dataset
        FinetuneJob("bert_mask_ratio0.3", "b", (0, 1)),  # a skipped or unknown dataset is left out
        FinetuneJob("bert_steps10", "a", (0, 1)), FinetuneJob("bert_steps10", "b", (0, 1)),
    )
    assert plan.table_inputs["finetune"][:2] == [
        "results/finetune/bert/a/seed0/metrics.json", "results/finetune/bert/a/seed1/metrics.json",
    ]


def test_draws_make_each_fine_tuned_run_again_from_every_seed_plus_k_and_leave_what_comes_from_elsewhere(tmp_path):
    """The small config's shape: a learned and a k-mer tokenizer, a control, a borrowed encoder, an encoder from elsewhere."""
    (tmp_path / "encoder").mkdir()
    (tmp_path / "encoder" / "model.safetensors").write_bytes(b"")
    tokenizers = {
        "vq": {"type": "vq", "train_genomes": ["phage"], "seed": 5},
        "kmer6": {"type": "kmer", "train_genomes": ["phage"], "k": 6},
        "bpe": {"type": "bpe", "train_genomes": ["phage"]},
    }
    runs = {
        "bert": {"tokenizer": "vq", "pretrain_genomes": ["phage"]},
        "kmer_bert": {"tokenizer": "kmer6", "pretrain_genomes": ["phage"]},
        "random": {"tokenizer": "vq", "pretrain_genomes": ["phage"], "steps": 0},
        "bert_full": {"tokenizer": "vq", "pretrained": "results/pretrain/bert", "finetune": {"mode": "full"}},
        "elsewhere": {"tokenizer": "kmer6", "pretrained": "encoder"},
        "unused_bpe": {"tokenizer": "bpe", "pretrain_genomes": ["phage"]},
    }
    finetune = {"runs": ["bert_full", "bert", "kmer_bert", "random", "elsewhere"], "seeds": [0, 1]}
    plan = _plan(_config(tmp_path, tokenizers=tokenizers, runs=runs, finetune=finetune, draws=3))

    assert sorted(plan.tokenizers) == ["bpe", "kmer6", "vq", "vq_draw1", "vq_draw2"]  # bpe: no fine-tuned run uses it
    assert (plan.tokenizers["vq_draw2"].settings["seed"], plan.tokenizers["vq_draw2"].type) == (7, "vq")
    assert (plan.tokenizers["vq_draw2"].draw_of, plan.tokenizers["vq_draw2"].draw) == ("vq", 2)
    assert (plan.tokenizers["vq"].draw_of, plan.tokenizers["vq"].draw) == (None, 0)
    drawn = {name: (run.draw_of, run.draw, run.tokenizer, run.settings.get("seed"), run.pretrained) for name, run in plan.runs.items() if run.draw}
    assert drawn == {
        # bert_full comes first in finetune.runs: its draw makes bert's draw, which bert then keeps
        "bert_draw1": ("bert", 1, "vq_draw1", 1, None),
        "bert_full_draw1": ("bert_full", 1, "vq_draw1", None, "results/pretrain/bert_draw1"),
        "kmer_bert_draw1": ("kmer_bert", 1, "kmer6", 1, None),  # the k-mer tokenizer is fixed, its encoder is drawn
        "random_draw1": ("random", 1, "vq_draw1", 1, None),  # the control's initial weights are drawn
        "bert_draw2": ("bert", 2, "vq_draw2", 2, None),
        "bert_full_draw2": ("bert_full", 2, "vq_draw2", None, "results/pretrain/bert_draw2"),
        "kmer_bert_draw2": ("kmer_bert", 2, "kmer6", 2, None),
        "random_draw2": ("random", 2, "vq_draw2", 2, None),
    }
    assert plan.runs["bert_full_draw1"].encoder_run == "bert_draw1"
    jobs = {(job.run, job.seeds) for job in plan.finetune_jobs}
    assert ("elsewhere", (0, 1)) in jobs and not any(run.startswith("elsewhere_") for run, _ in jobs)
    assert {seeds for run, seeds in jobs if run.endswith("_draw2")} == {(2, 3)}
    assert "results/finetune/random_draw1/tiles/seed2/metrics.json" in plan.table_inputs["finetune"]
    assert "results/pretrain/bert_draw2/metrics.json" in plan.table_inputs["pretrain"]
    assert "results/tokens/vq_draw1/phage.parquet" in plan.final_outputs
    tables_plan = plan.tables_plan
    assert tables_plan["runs"]["random_draw2"] | {"order": None} == {
        "tokenizer": "vq_draw2", "type": "vq", "variant_of": None, "ablation": [], "control": True, "encoder_run": "random_draw2",
        "finetune_mode": None, "draw_of": "random", "draw": 2, "order": None,
    }
    assert tables_plan["tokenizers"]["vq_draw1"]["draw_of"] == "vq"
    assert plan.draw_of["bert_full_draw1"] == "bert_full" and plan.draw_of["vq_draw2"] == "vq" and "bert" not in plan.draw_of

    one = _plan(_config(tmp_path, tokenizers=tokenizers, runs=runs, finetune=finetune))  # draws: 1, the default
    assert not any(run.draw for run in one.runs.values()) and len(one.finetune_jobs) == 5
    taken = {**runs, "bert_draw1": runs["bert"]}
    assert "draw 1 of 'bert' 'bert_draw1', which the config already uses" in _error(
        _config(tmp_path, tokenizers=tokenizers, runs=taken, finetune=finetune, draws=2)
    )


def test_a_datasets_runs_cell_limits_which_runs_fine_tune_it_and_is_no_setting_of_the_job(tmp_path):
    """Species at 250k nt: only a strided tokenizer's run fits. The cell names runs of finetune.runs; empty: all of them."""
    runs = {"bert": {"tokenizer": "vq", "pretrain_genomes": ["phage"]}, "strided": {"tokenizer": "vq", "pretrain_genomes": ["phage"]}}
    datasets = [_tiles("long", runs="strided"), _tiles("short")]
    plan = _plan(_config(tmp_path, datasets=datasets, runs=runs, finetune={"runs": ["bert", "strided"]}))
    assert plan.finetune_jobs == (FinetuneJob("bert", "short"), FinetuneJob("strided", "long"), FinetuneJob("strided", "short"))
    assert "runs" not in plan.datasets["long"].finetune_spec and "runs" not in plan.datasets["long"].scoring_spec
    assert plan.datasets["long"].finetune_spec == plan.datasets["short"].finetune_spec | {"dataset": "long"}
    error = _error(_config(tmp_path, datasets=[_tiles("long", runs="strided,nobody")], runs=runs, finetune={"runs": ["bert", "strided"]}))
    assert "dataset long: runs names 'nobody', which is not in finetune.runs (bert, strided)" in error


def test_the_codebook_analysis_runs_each_listed_tokenizer_on_each_listed_dataset_and_is_built_by_default(tmp_path):
    datasets = [_tiles("a"), _tiles("b"), _tiles("gone", genomes="", source=str(tmp_path / "nowhere"))]
    tokenizers = {"vq": {"type": "vq", "train_genomes": ["phage"]}, "hrq": {"type": "hrq", "train_genomes": ["phage"]}}
    analysis = {"datasets": ["b", "gone"], "tokenizers": ["hrq", "vq"], "settings": {"embedding": "tsne"}}
    plan = _plan(_config(tmp_path, datasets=datasets, tokenizers=tokenizers, analysis=analysis))
    assert plan.analysis_jobs == (AnalysisJob("hrq", "b"), AnalysisJob("vq", "b"))  # a skipped dataset is left out
    assert dict(plan.analysis_settings) == {"embedding": "tsne"}
    assert "results/codebook_analysis/vq/b/summary.json" in plan.final_outputs
    assert plan.analysis_inputs("vq", "b") == {
        **plan.tokenizers["vq"].inputs,
        "tokens": [f"results/dataset_tokens/vq/b/{split}.parquet" for split in ("train", "dev", "test")],
        "dataset": [f"results/datasets/b/{split}.parquet" for split in ("train", "dev", "test")],
    }
    assert _plan(_config(tmp_path, datasets=datasets)).analysis_jobs == ()  # none unless asked for


@pytest.mark.parametrize(
    ("analysis", "message"),
    [
        ({"datasets": ["a"], "tokenizers": ["kmer6"]}, "analysis.tokenizers: kmer6 is a kmer tokenizer; the codebook analysis reads learned codes (vq or hrq)"),
        ({"datasets": ["a"], "tokenizers": ["nope"]}, "analysis.tokenizers: no tokenizer named 'nope'"),
        ({"datasets": ["typo"], "tokenizers": ["vq"]}, "analysis.datasets: no dataset named 'typo' in the datasets sheet"),
        ({"datasets": ["level"], "tokenizers": ["vq"]}, "analysis.datasets: level is a regression task; the codebook analysis compares classes"),
        ({"dataset": ["a"]}, "config: analysis: Additional properties are not allowed ('dataset' was unexpected)"),
    ],
)
def test_a_bad_analysis_block_is_one_line(tmp_path, analysis, message):
    datasets = [_tiles("a"), _tiles("level", task="regression", num_labels=1, metric="spearman")]
    tokenizers = {"vq": {"type": "vq", "train_genomes": ["phage"]}, "kmer6": {"type": "kmer", "train_genomes": ["phage"], "k": 6}}
    assert _error(_config(tmp_path, datasets=datasets, tokenizers=tokenizers, analysis=analysis)) == message


def test_only_tokenizers_that_runs_pretrain_on_tokenize_genomes_else_every_one_but_sweep_variants(tmp_path):
    tokenizers = {
        "vq": {"type": "vq", "train_genomes": ["phage"], "codebook_size": 512},
        "kmer6": {"type": "kmer", "train_genomes": ["phage"], "k": 6},
    }
    ablations = {"code_size": {"key": "codebook_size", "tokenizers": ["vq"], "values": [256]}}
    plan = _plan(_config(tmp_path, tokenizers=tokenizers, ablations=ablations))
    assert plan.tokenized_tokenizers == ["vq"]
    assert plan.trained_tokenizers == ["kmer6", "vq", "vq_code_size256"]
    unused = _plan(_config(tmp_path, tokenizers=tokenizers, ablations=ablations, runs={}, finetune={}))
    assert unused.tokenized_tokenizers == ["kmer6", "vq"]
    assert unused.final_outputs[:3] == ["results/tokens/kmer6/mouse.parquet", "results/tokens/kmer6/phage.parquet", "results/tokens/kmer6/virus.parquet"]
    assert {"results/tables/summary.csv", "results/tables/summary.md"} <= set(unused.final_outputs)
    # the report's figures close the list, the runtime table (which reads every rule's benchmark) last
    assert unused.final_outputs[-4:] == [
        "results/plots/tokenizers/vq.png", "results/plots/tokenizers/vq_code_size256.png", "results/plots/tables.html",
        "results/plots/runtime.html",
    ]


def test_the_tables_plan_names_each_fine_tuned_run_and_every_tokenizer_with_type_and_sweep_values(tmp_path):
    ablations = {
        "code_size": {"key": "codebook_size", "tokenizers": ["vq"], "values": [256]},
        "mask_ratio": {"key": "mask_ratio", "runs": ["bert"], "values": [0.3]},
    }
    plan = _plan(_config(tmp_path, ablations=ablations, runs={
        "bert": {"tokenizer": "vq", "pretrain_genomes": ["phage"], "mask_ratio": 0.15},
        "unused": {"tokenizer": "vq", "pretrain_genomes": ["phage"]},
    }))
    assert plan.tables_plan == {
        "runs": {
            "bert": {
                "tokenizer": "vq", "type": "vq", "variant_of": None, "ablation": [], "control": False, "encoder_run": "bert",
                "finetune_mode": None, "draw_of": None, "draw": 0, "order": 0,
            },
            "bert_mask_ratio0.3": {
                "tokenizer": "vq", "type": "vq", "variant_of": "bert", "ablation": [{"axis": "mask_ratio", "value": 0.3}],
                "control": False, "encoder_run": "bert_mask_ratio0.3", "finetune_mode": None, "draw_of": None, "draw": 0,
                "order": 1,
            },
        },
        "tokenizers": {
            "vq": {"type": "vq", "variant_of": None, "ablation": [], "draw_of": None, "draw": 0},
            "vq_code_size256": {
                "type": "vq", "variant_of": "vq", "ablation": [{"axis": "code_size", "value": 256}], "draw_of": None, "draw": 0,
            },
        },
    }
    assert canonical_json(plan.tables_plan).startswith('{"runs":{"bert":{"ablation":[],"control":false,"draw":0,"draw_of":null,"encoder_run":"bert","finetune_mode":null,')


def test_the_tables_plan_marks_the_control_and_keeps_config_order_and_the_tables_read_pretraining_metrics(tmp_path):
    encoder = tmp_path / "encoder"
    encoder.mkdir()
    (encoder / "model.safetensors").write_text("")
    runs = {
        "zeta": {"tokenizer": "vq", "pretrain_genomes": ["phage"]},
        "alpha": {"tokenizer": "vq", "pretrain_genomes": ["phage"], "steps": 0, "finetune": {"mode": "full"}},
        "elsewhere": {"tokenizer": "vq", "pretrained": str(encoder)},
        "zeta_full": {"tokenizer": "vq", "pretrained": "results/pretrain/zeta", "finetune": {"mode": "full"}},
    }
    plan = _plan(_config(tmp_path, runs=runs, finetune={"runs": ["elsewhere", "alpha", "zeta", "zeta_full"]}))
    info = plan.tables_plan["runs"]
    assert [(name, info[name]["order"]) for name in runs] == [("zeta", 0), ("alpha", 1), ("elsewhere", 2), ("zeta_full", 3)]  # the runs: block's order
    assert [info[name]["encoder_run"] for name in runs] == ["zeta", "alpha", None, "zeta"]
    assert (info["alpha"]["control"], info["alpha"]["finetune_mode"]) == (True, "full")
    assert (info["zeta"]["control"], info["zeta"]["finetune_mode"]) == (False, None)
    assert plan.table_inputs["pretrain"] == ["results/pretrain/alpha/metrics.json", "results/pretrain/zeta/metrics.json"]


@pytest.mark.parametrize(
    "edit, expected",
    [
        pytest.param(lambda c: c["tokenizers"]["vq"].update(train_genomes=["nope"]),
                     r"^tokenizers\.vq\.train_genomes: genome\(s\) nope are not in .*genomes\.tsv$", id="tokenizer-genome"),
        pytest.param(lambda c: c["runs"]["bert"].update(pretrain_genomes=["phage", "nope"]),
                     r"^runs\.bert\.pretrain_genomes: genome\(s\) nope are not in", id="run-genome"),
        pytest.param(lambda c: c["runs"]["bert"].update(tokenizer="nope"), r"^runs\.bert\.tokenizer: no tokenizer named 'nope'$", id="run-tokenizer"),
        pytest.param(lambda c: c["finetune"].update(runs=["nope"]), r"^finetune\.runs: no run named 'nope'$", id="finetune-run"),
        pytest.param(lambda c: c.update(ablations={"size": {"key": "k", "tokenizers": ["nope"], "values": [1]}}),
                     r"^ablations\.size\.tokenizers: no tokenizer named 'nope'$", id="sweep-tokenizer"),
        pytest.param(lambda c: c.update(ablations={"mask": {"key": "mask_ratio", "runs": ["nope"], "values": [0.2]}}),
                     r"^ablations\.mask\.runs: no run named 'nope'$", id="sweep-run"),
        pytest.param(lambda c: c["runs"]["bert"].update(pretrained="/nowhere") or c["runs"]["bert"].pop("pretrain_genomes"),
                     r"^runs\.bert\.pretrained: /nowhere has no model\.safetensors$", id="pretrained-folder"),
        pytest.param(lambda c: c["tokenizers"]["vq"].update(type="foo"), r"^config: tokenizers\.vq\.type: 'foo' is not one of \[", id="schema-enum"),
        pytest.param(lambda c: c["finetune"].update(seeds=[-1]), r"^config: finetune\.seeds\.0: -1 is less than the minimum of 0$", id="schema-minimum"),
        pytest.param(lambda c: c.pop("tokenizers"), r"^config: 'tokenizers' is a required property$", id="schema-required"),
        pytest.param(lambda c: c["tokenizers"]["vq"].pop("train_genomes"),
                     r"^config: tokenizers\.vq: fits none of the allowed forms \('train_genomes' is a required property; 'path' is a required property\)$",
                     id="schema-one-of"),
    ],
)
def test_unknown_names_and_schema_violations_are_one_line_errors_naming_the_key(tmp_path, edit, expected):
    config = _config(tmp_path)
    edit(config)
    assert re.search(expected, _error(config))


def test_a_dataset_names_known_genomes_and_a_metric_that_fits_its_task(tmp_path):
    message = _error(_config(tmp_path, datasets=[_tiles(genomes="phage,nope")]))
    assert re.search(r"datasets\.tsv dataset tiles: genome\(s\) nope are not in .*genomes\.tsv$", message)
    message = _error(_config(tmp_path, datasets=[_tiles(metric="spearman")]))
    assert message.endswith("dataset tiles: metric spearman does not fit task classification (use one of accuracy, f1, mcc)")
    message = _error(_config(tmp_path, datasets=[_tiles(source="https://example.org/gue/")]))
    assert message.endswith("dataset tiles: give either a source or genomes")


def test_archive_sources_name_a_configured_archive_and_a_relative_folder(tmp_path):
    archives = {"gue": {"source": "https://example.org/GUE.zip"}}
    plan = _plan(_config(tmp_path, datasets=[_tiles(genomes="", source="archive:gue/GUE/EMP/H3")], archives=archives))
    assert plan.datasets["tiles"].archive == "gue"
    assert plan.dataset_inputs("tiles") == ["resources/archives/gue"]
    assert plan.archives["gue"].sha256 == ""
    message = _error(_config(tmp_path, datasets=[_tiles(genomes="", source="archive:gue/GUE/EMP/H3")]))
    assert message.endswith("dataset tiles: source archive:gue/GUE/EMP/H3 names archive 'gue', which is not under archives: in the config")
    message = _error(_config(tmp_path, datasets=[_tiles(genomes="", source="archive:gue/../x")], archives=archives))
    assert "dataset tiles: source 'archive:gue/../x'" in message and "no '..'" in message


def test_a_missing_local_source_folder_is_skipped_with_its_reason_and_an_existing_one_is_read(tmp_path):
    folder = tmp_path / "gue" / "H3"
    folder.mkdir(parents=True)
    datasets = [
        _tiles("eep", genomes="", source="resources/eep/k562"),
        _tiles("h3", genomes="", source=f"{folder}/", train_from="dev"),
    ]
    plan = _plan(_config(tmp_path, datasets=datasets))
    assert list(plan.datasets) == ["h3"]
    (skipped,) = plan.skipped_datasets
    assert skipped.name == "eep"
    assert skipped.reason.startswith("its source folder resources/eep/k562 does not exist")
    assert plan.dataset_inputs("h3") == [f"{folder}/dev.csv", f"{folder}/test.csv"]  # trained on dev: no train.csv
    assert plan.dataset_genome_args("h3") == ""


def test_duplicate_ids_name_the_line_of_the_file(tmp_path):
    config = _config(tmp_path)
    _sheet(tmp_path / "datasets.tsv", DATASET_COLUMNS, [_tiles("a"), _tiles("b"), _tiles("a")], preamble="# a comment\n\n")
    assert re.search(r"datasets\.tsv line 6: duplicate dataset 'a'$", _error(config))
    config = _config(tmp_path)
    _sheet(tmp_path / "genomes.tsv", GENOME_COLUMNS, [*GENOMES, GENOMES[0]])
    assert re.search(r"genomes\.tsv line 5: duplicate genome 'phage'$", _error(config))


def test_cells_are_typed_by_their_column_in_the_schema(tmp_path):
    plan = _plan(_config(tmp_path, datasets=[_tiles(max_train_samples="", max_n_fraction="0.25")]))
    cells = plan.datasets["tiles"].cells
    assert cells["num_labels"] == 2 and cells["max_length"] == 64 and isinstance(cells["max_length"], int)
    assert cells["learning_rate"] == 3e-5 and cells["max_n_fraction"] == 0.25
    assert cells["max_train_samples"] is None and cells["kind"] == "" and cells["description"] == ""
    assert plan.datasets["tiles"].build_spec == {
        "dataset": "tiles", "genomes": "phage,virus", "max_length": 64, "max_n_fraction": 0.25, "num_labels": 2, "task": "classification",
    }
    assert "learning_rate" in plan.datasets["tiles"].finetune_spec and "description" not in plan.datasets["tiles"].finetune_spec
    # The floor and the probes: the dataset's cells without the fine-tuning optimiser's.
    assert plan.datasets["tiles"].scoring_spec == {
        k: v for k, v in plan.datasets["tiles"].finetune_spec.items() if k not in ("epochs", "batch_size", "learning_rate", "warmup_steps")
    }
    assert "max_length" in plan.datasets["tiles"].scoring_spec and "epochs" not in plan.datasets["tiles"].scoring_spec


@pytest.mark.parametrize(
    "cells, expected",
    [
        pytest.param({"max_length": "long"}, r"line 2: max_length: 'long' is not an integer$", id="integer"),
        pytest.param({"learning_rate": "fast"}, r"line 2: learning_rate: 'fast' is not a number$", id="number"),
        pytest.param({"num_labels": ""}, r"line 2: num_labels: None is not of type 'integer'$", id="required-integer-empty"),
        pytest.param({"group": "XYZ"}, r"line 2: group: 'XYZ' is not one of \[", id="enum"),
    ],
)
def test_a_bad_cell_names_the_line_and_column(tmp_path, cells, expected):
    assert re.search(expected, _error(_config(tmp_path, datasets=[_tiles(**cells)])))


def test_a_missing_or_empty_sheet_is_an_error(tmp_path):
    assert _error({**_config(tmp_path), "datasets": "nope.tsv"}) == "sheet nope.tsv not found (named in the config)"
    (tmp_path / "empty.tsv").write_text("# nothing\n" + "\t".join(DATASET_COLUMNS) + "\n")
    assert _error({**_config(tmp_path), "datasets": str(tmp_path / "empty.tsv")}).endswith("empty.tsv has no rows")


def test_folders_given_by_path_and_pretrained_are_used_as_they_are(tmp_path):
    tokenizer, encoder = tmp_path / "tokenizer", tmp_path / "encoder"
    tokenizer.mkdir()
    (tokenizer / "config.json").write_text(json.dumps({"type": "hrq"}))
    (tokenizer / "model.safetensors").write_text("")
    encoder.mkdir()
    (encoder / "model.safetensors").write_text("")
    config = _config(
        tmp_path,
        tokenizers={"theirs": {"path": str(tokenizer)}},
        runs={"theirs": {"tokenizer": "theirs", "pretrained": str(encoder), "gpus": 2}},
        finetune={"runs": ["theirs"]},
    )
    plan = _plan(config)
    assert plan.tokenizers["theirs"].type == "hrq"
    assert plan.trained_tokenizers == [] and plan.pretrained_runs == []
    assert plan.finetune_inputs("theirs", "tiles") == {
        "tokenizer_config": str(tokenizer / "config.json"),
        "tokenizer_model": [str(tokenizer / "model.safetensors")],
        "pretrained": str(encoder / "model.safetensors"),
        # the dataset as the given tokenizer's codes, made here from the prepared dataset
        "dataset": [f"results/dataset_tokens/theirs/tiles/{split}.parquet" for split in ("train", "dev", "test")],
    }
    assert plan.dataset_tokens_inputs("theirs", "tiles")["dataset"] == [
        f"results/datasets/tiles/{split}.parquet" for split in ("train", "dev", "test")
    ]
    assert plan.runs["theirs"].gpus == 2 and plan.runs["theirs"].nodes == 1
    assert plan.runs["theirs"].model_settings == {"tokenizer": "theirs", "pretrained": str(encoder)}
    (tokenizer / "config.json").unlink()
    assert re.search(r"^tokenizers\.theirs\.path: .*tokenizer has no config\.json$", _error(config))


def test_stage_inputs_and_settings(tmp_path):
    species = _tiles("species", kind="species", genomes="mouse,phage")
    plan = _plan(_config(tmp_path, datasets=[_tiles(), species], windows={"length": 512, "reverse_complement": True}))
    assert plan.dataset_inputs("tiles") == ["results/windows/phage.parquet", "results/windows/virus.parquet"]
    assert plan.dataset_genome_args("tiles") == "--windows phage=results/windows/phage.parquet virus=results/windows/virus.parquet"
    assert plan.dataset_inputs("species") == [
        "resources/genomes/mouse.fa.gz", "resources/genomes/mouse.fa.gz.fai", "resources/genomes/mouse.fa.gz.gzi",
        "resources/genomes/phage.fa.gz", "resources/genomes/phage.fa.gz.fai", "resources/genomes/phage.fa.gz.gzi",
        "resources/genomes/mouse.assembly_report.txt",
    ]
    assert plan.dataset_genome_args("species") == (
        "--fastas mouse=resources/genomes/mouse.fa.gz phage=resources/genomes/phage.fa.gz"
        " --assembly-reports mouse=resources/genomes/mouse.assembly_report.txt"
    )
    assert plan.genomes_with_reports == ["mouse"]
    assert plan.genomes["virus"].source_file == "genomes/virus.fa.gz" and plan.genomes["phage"].source_file is None
    assert plan.window_flags == "--length 512 --reverse-complement"
    vq = plan.tokenizers["vq"]
    assert vq.windows == ["results/windows/phage.parquet"]
    assert vq.training_settings == {"type": "vq", "train_genomes": ("phage",), "codebook_size": 512}
    assert vq.evaluation_settings == {"heldout_windows": 64}
    assert plan.pretrain_inputs("bert") == {
        "tokenizer_config": "results/tokenizers/vq/config.json",
        "tokens": ["results/tokens/vq/phage.parquet", "results/tokens/vq/virus.parquet"],
    }


def test_the_plan_is_read_only(tmp_path):
    plan = _plan(_config(tmp_path))
    with pytest.raises(AttributeError):
        plan.mirror = "elsewhere"  # type: ignore[misc]
    with pytest.raises(TypeError):
        plan.runs["bert"].settings["mask_ratio"] = 0.5  # type: ignore[index]
    with pytest.raises(TypeError):
        plan.datasets["tiles"].cells["max_length"] = 1  # type: ignore[index]


def test_the_module_imports_without_snakemake_torch_pysam_or_pyarrow():
    code = "import sys, vqdna.plan; print(sorted({'snakemake', 'torch', 'pysam', 'pyarrow'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_a_run_may_fine_tune_another_runs_encoder_its_own_way(tmp_path):
    runs = {
        "bert": {"tokenizer": "vq", "pretrain_genomes": ["phage"]},
        "random": {"tokenizer": "vq", "pretrain_genomes": ["phage"], "steps": 0, "finetune": {"mode": "full", "learning_rate": 3e-4}},
        "bert_full": {"tokenizer": "vq", "pretrained": "results/pretrain/bert", "finetune": {"mode": "full"}},
    }
    plan = _plan(_config(tmp_path, runs=runs, finetune={"runs": ["bert", "random", "bert_full"], "mode": "lora"}))
    assert plan.pretrained_runs == ["bert", "random"]  # bert_full is not pretrained again
    assert plan.finetune_inputs("bert_full", "tiles")["pretrained"] == "results/pretrain/bert/model.safetensors"
    assert plan.finetune_settings_of("bert")["mode"] == "lora"
    assert plan.finetune_settings_of("random")["mode"] == "full" == plan.finetune_settings_of("bert_full")["mode"]
    assert plan.finetune_settings_of("random")["learning_rate"] == 3e-4 and "learning_rate" not in plan.finetune_settings_of("bert_full")
    assert "finetune" not in plan.runs["random"].model_settings  # pretraining never sees it
    runs["bert_full"]["tokenizer"] = "other"
    tokenizers = {"vq": {"type": "vq", "train_genomes": ["phage"]}, "other": {"type": "kmer", "train_genomes": ["phage"]}}
    message = _error(_config(tmp_path, runs=runs, tokenizers=tokenizers, finetune={"runs": ["bert_full"]}))
    assert message == "runs.bert_full: pretrained results/pretrain/bert is run bert's encoder, pretrained on tokenizer vq, not other"


def test_an_unknown_finetune_mode_is_a_schema_error(tmp_path):
    assert "finetune.mode" in _error(_config(tmp_path, finetune={"runs": ["bert"], "mode": "partial"}))


def test_the_heads_settings_are_accepted_for_every_run_and_for_one_and_checked(tmp_path):
    head = {"pooling": "mean_max", "head": "linear", "head_norm": "batch"}
    runs = {"bert": {"tokenizer": "vq", "pretrain_genomes": ["phage"], "finetune": head}}
    assert _plan(_config(tmp_path, runs=runs, finetune={"runs": ["bert"]})).finetune_settings_of("bert").items() >= head.items()
    assert _plan(_config(tmp_path, finetune={"runs": ["bert"], **head})).finetune_settings_of("bert").items() >= head.items()
    assert "finetune.head_norm" in _error(_config(tmp_path, finetune={"runs": ["bert"], "head_norm": "layer"}))


BAD_NAMES = ["../../../somewhere", "a/b", ".hidden", "with space", "$(touch x)", ""]


@pytest.mark.parametrize("name", BAD_NAMES)
@pytest.mark.parametrize("where", ["tokenizers", "runs", "archives", "ablations"])
def test_names_that_would_leave_results_or_reach_a_shell_are_refused(tmp_path, name, where):
    """Config names become folders under results/ and logs/: the sheets' id pattern, or one line naming the key."""
    config = _config(tmp_path)
    if where == "tokenizers":
        config["tokenizers"][name] = config["tokenizers"].pop("vq")
        config["runs"]["bert"]["tokenizer"] = name
    elif where == "runs":
        config["runs"][name] = config["runs"].pop("bert")
        config["finetune"]["runs"] = [name]
    elif where == "archives":
        config["archives"] = {name: {"source": "gue.zip"}}
    else:
        config["ablations"] = {name: {"key": "codebook_size", "values": [256], "tokenizers": ["vq"]}}
    message = _error(config)
    assert message.startswith(f"config: {where}: the name {name!r} is not allowed: a name starts with a letter or digit")


def test_a_sweep_value_that_makes_a_bad_variant_name_is_refused(tmp_path):
    config = _config(tmp_path, ablations={"code_size": {"key": "codebook_size", "values": ["../x"], "tokenizers": ["vq"]}})
    assert _error(config) == (
        "ablations.code_size.values: '../x' makes the variant 'vq_code_size../x', which is not allowed: "
        "a name starts with a letter or digit and holds only letters, digits, '_', '.' and '-'"
    )


def test_a_local_source_that_is_gone_is_one_line_unless_the_genome_here_was_built_from_it(tmp_path):
    """Snakemake keeps outputs whose input is missing: a sheet pointed at a missing file must not keep the old genome."""
    (tmp_path / "genomes" / "virus.fa.gz").unlink()
    config = _config(tmp_path)
    assert _error(config) == f"{tmp_path / 'genomes.tsv'}: genome virus: source genomes/virus.fa.gz not found"
    built = tmp_path / "resources" / "genomes"
    built.mkdir(parents=True)
    (built / "virus.fa.gz").write_bytes(b"")
    (built / "virus.source.json").write_text(json.dumps({"source": "elsewhere/virus.fa"}))
    assert _error(config) == (
        f"{tmp_path / 'genomes.tsv'}: genome virus: source genomes/virus.fa.gz not found; resources/genomes/virus.fa.gz "
        "was built from elsewhere/virus.fa: restore the file, or point the sheet at one that exists"
    )
    # Built from this very file, since removed: the genome stands, and its job has no input to miss.
    (built / "virus.source.json").write_text(json.dumps({"source": "genomes/virus.fa.gz"}))
    assert _plan(config).genomes["virus"].source_file is None


@pytest.mark.parametrize("source", ["file:///data/virus.fa", "s3://bucket/virus.fa", "gopher://host/virus.fa"])
def test_a_source_url_no_rule_fetches_says_unsupported_scheme(tmp_path, source):
    genomes = [{**GENOMES[0], "source": source}, *GENOMES[1:]]
    config = {**_config(tmp_path), "genomes": _sheet(tmp_path / "genomes.tsv", GENOME_COLUMNS, genomes)}
    scheme = source.split("://")[0]
    assert _error(config) == (
        f"{tmp_path / 'genomes.tsv'}: genome phage: source {source}: unsupported scheme '{scheme}://' "
        "(use https, http, ftp or a local path)"
    )


def test_a_dataset_source_url_no_rule_fetches_says_unsupported_scheme(tmp_path):
    config = _config(tmp_path, datasets=[_tiles(), {**_tiles("gue"), "genomes": "", "source": "file:///data/gue/prom"}])
    assert _error(config) == (
        f"{tmp_path / 'datasets.tsv'}: dataset gue: source file:///data/gue/prom: unsupported scheme 'file://' "
        "(use https, http, ftp or a local path)"
    )


def test_plain_http_and_ftp_genomes_without_a_sha256_are_named_for_a_warning(tmp_path):
    genomes = [
        {"genome": "phage", "source": "http://example.org/phage.fa"},
        {"genome": "virus", "source": "ftp://example.org/virus.fa", "sha256": "a" * 64},
        {"genome": "mouse", "source": "ftp://example.org/mouse.fa"},
        {"genome": "local", "source": "genomes/virus.fa.gz"},
        {"genome": "secure", "source": "https://example.org/secure.fa"},
    ]
    config = {**_config(tmp_path), "genomes": _sheet(tmp_path / "genomes.tsv", GENOME_COLUMNS, genomes)}
    assert _plan(config).unverified_plain_downloads == ["phage", "mouse"]


@pytest.mark.parametrize("change,expected", [
    (lambda header: header + ["epoch"], r"line 1: unknown column 'epoch'; the columns are dataset, group, task, num_labels, "),
    (lambda header: [c for c in header if c != "task"], r"line 1: column 'task' is missing; required: dataset, group, task, num_labels, metric, max_length$"),
], ids=["unknown-column", "missing-column"])
def test_a_sheet_with_an_unknown_or_missing_column_is_one_line_naming_it_and_what_is_allowed(tmp_path, change, expected):
    header = change(list(DATASET_COLUMNS))
    row = {**_tiles(), "epoch": "3"}
    config = {**_config(tmp_path), "datasets": _sheet(tmp_path / "datasets.tsv", header, [row])}
    assert re.search(expected, _error(config))
