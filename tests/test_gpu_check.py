"""The GPU path without pysam and Snakemake, as on a bare GPU machine: every module imports, and the prepared
GPU check (benchmarks/gpu_check.py) runs every section on the CPU at tiny sizes (--smoke), both with the two
blocked by tests/without_pysam/sitecustomize.py in every process they start."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import data_file

REPO = Path(__file__).resolve().parents[1]
BLOCKER = Path(__file__).resolve().parent / "without_pysam"
CHECK = REPO / "benchmarks" / "gpu_check.py"
SMOKE_STAGES = [
    "windows", "train_tokenizer", "evaluate_tokenizer", "tokenize_windows", "pretrain", "prepare_dataset", "finetune",
    "linear_probe", "predict", "embed",
]


def without_pysam_env() -> dict:
    """This interpreter's environment with pysam and Snakemake blocked (sitecustomize) and the repository importable."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(BLOCKER), str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    return env


def run_blocked(*args: str, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *args], env=without_pysam_env(), cwd=REPO, capture_output=True, text=True, timeout=timeout, **kwargs)


def test_the_blocker_blocks_pysam_and_snakemake():
    result = run_blocked("-c", "import pysam")
    assert result.returncode == 1 and "blocked: the GPU machine has no pysam" in result.stderr
    result = run_blocked("-c", "import snakemake.utils")
    assert result.returncode == 1 and "blocked: the GPU machine has no snakemake" in result.stderr


def test_every_module_and_the_command_line_import_without_pysam_and_snakemake():
    script = (
        "import importlib, pkgutil, vqdna\n"
        "names = [m.name for m in pkgutil.walk_packages(vqdna.__path__, 'vqdna.') if not m.name.endswith('__main__')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    result = run_blocked("-c", script)
    assert result.returncode == 0, result.stderr
    assert int(result.stdout.strip()) >= 30  # every module of the package, not an empty walk
    for subcommand in ["tokenize", "pretrain", "finetune", "embed", "predict", "inspect", "windows"]:
        result = run_blocked("-m", "vqdna", subcommand, "--help")
        assert result.returncode == 0, f"vqdna {subcommand} --help: {result.stderr}"


@pytest.fixture(scope="module")
def smoke(test_data, tmp_path_factory):
    """One run of the GPU check at tiny sizes on the CPU, on two real genomes, with pysam and Snakemake blocked."""
    fastas = [data_file(test_data, "genomes/lambda_virus.fa"), data_file(test_data, "genomes/MT-human.fa")]
    outdir = tmp_path_factory.mktemp("gpu_check")
    result = run_blocked(str(CHECK), str(outdir), "--smoke", "--fasta", *map(str, fastas))
    report = json.loads((outdir / "gpu_check.json").read_text()) if (outdir / "gpu_check.json").is_file() else {}
    return result, report, outdir


def test_smoke_runs_every_section_and_stage_with_pysam_blocked(smoke):
    result, report, _ = smoke
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert report["preflight"]["pysam_importable"] is False and report["preflight"]["snakemake_importable"] is False
    assert [name for name in report["sections"]] == ["smoke", "encode", "pretrain", "finetune"]
    assert {name: s["status"] for name, s in report["sections"].items()} == dict.fromkeys(report["sections"], "ok")
    stages = report["sections"]["smoke"]["stages"]
    assert [s["stage"].split()[0] for s in stages] == SMOKE_STAGES
    assert all(s["status"] == "ok" for s in stages)


def test_smoke_predict_reproduces_fine_tuning_and_embed_writes_every_sequence(smoke):
    stages = {s["stage"].split()[0]: s for s in smoke[1]["sections"]["smoke"]["stages"]}
    assert stages["predict"]["prediction_agreement"] == 1.0
    assert stages["predict"]["max_probability_difference"] < 1e-4  # the CPU is fp32 throughout
    assert stages["embed"]["finite"] and stages["embed"]["rows"] == stages["predict"]["rows"] > 0
    windows = stages["windows"]["windows_per_split"]
    assert set(windows) == {"lambda_virus", "MT_human"} and all(counts["train"] > 0 for counts in windows.values())


def test_encode_pretrain_and_finetune_sections_measure_what_they_name(smoke):
    sections = smoke[1]["sections"]
    for record in sections["encode"]["tokenizers"]:
        assert len(record["encode"]) == 4 and all(row["nt_per_second"] > 0 for row in record["encode"])
        assert len(record["bf16_fp32_code_agreement_per_level"]) == len(record["config"].get("taps") or [1])
        assert record["training"]["step_seconds"] > 0
    assert [row["class"] for row in sections["pretrain"]["models"]] == ["VqdnaForMaskedLM", "BertForMaskedLM"]
    assert all(row["tokens_per_second"] > 0 for row in sections["pretrain"]["models"])
    assert sections["pretrain"]["pipeline_step"]["tokens_per_second"] > 0
    lengths = sections["finetune"]["lengths"]
    assert [row["status"] for row in lengths] == ["ok"] * len(lengths)
    assert "predicted_step_seconds" in lengths[-1]  # the longest length is run only when its predicted step fits
    # the long species inputs through a stride-8 tokenizer beside one code per nt; the encoder sees ceil(nt / stride) tokens
    assert {row["stride"] for row in lengths} == {1, 8}
    assert all(row["tokens"] == -(-row["length_nt"] // row["stride"]) for row in lengths)
    assert sections["finetune"]["longest_length_measured_per_stride"]["8"] > sections["finetune"]["longest_length_measured"]
    assert sections["finetune"]["cost_model"]["r_squared"] is not None


def test_smoke_compiles_the_vq_encoder_once_and_says_whether_the_compile_pays(smoke):
    _, report, outdir = smoke
    vq, hrq = report["sections"]["encode"]["tokenizers"]
    assert vq["compile"]["status"] == "ok" and vq["compile"]["compile_seconds"] > 0 and vq["compile"]["shapes_compiled"] == [[16, 512, 5]]
    assert vq["compile"]["code_agreement_per_level"] == [1.0]  # fp32 on the CPU: the compiled encoder's codes are eager's
    assert isinstance(vq["compile"]["pays"], bool) and vq["compile"]["eager_nt_per_second"] > 0
    assert hrq["compile"]["status"].startswith("skipped with --smoke")  # one compile in CI, not three
    assert report["sections"]["pretrain"]["compile"]["status"].startswith("skipped with --smoke")
    assert "vq encoder compiled (default)" in (outdir / "gpu_check.md").read_text()


def test_smoke_report_names_the_machine_and_what_one_gpu_cannot_check(smoke):
    _, report, outdir = smoke
    machine = report["preflight"]["machine"]
    assert machine["torch"] and machine["transformers"] and machine["device"] == "cpu"
    assert report["preflight"]["measured_peak_tflops"] > 0
    assert any("DDP" in item for item in report["not_checked"])
    page = (outdir / "gpu_check.md").read_text()
    for heading in ["## smoke", "## encode", "## pretrain", "## finetune", "## Not checked here"]:
        assert heading in page


def test_a_section_past_its_cap_is_stopped_and_recorded(tmp_path):
    result = run_blocked(str(CHECK), str(tmp_path), "--smoke", "--sections", "finetune", "--caps", "finetune=2")
    assert result.returncode == 1
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert report["sections"]["finetune"]["status"] == "time_cap"
    assert "finetune: time_cap" in (tmp_path / "gpu_check.md").read_text()
