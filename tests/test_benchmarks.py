"""Every benchmark script runs, at its --smoke sizes, and writes the JSON its readers need.

The scripts under benchmarks/ are not tests and call into the package's internals: run here, a rename that breaks
one fails CI rather than the next person who needs its numbers. --smoke changes only sizes, so the smoke run goes
through the real run's code. gpu_check.py is run by tests/test_gpu_check.py, small.py by tests/test_compare.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import NamedTuple

import pytest
from helpers import data_file

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"
LIBRARIES = ["machine", "smoke", "timing"]  # imported by the scripts, never run
RUN_ELSEWHERE = ["gpu_check", "small", "small_dev"]  # tests/test_gpu_check.py; tests/test_compare.py (it reads a finished run's tables); tests/test_workflow.py (it fine-tunes the shared run's encoder)


class Expected(NamedTuple):
    rows: str  # the list of measurements in the JSON
    name: str  # the key that names a row
    names: list  # the rows a smoke run writes, in order
    keys: set[str]  # what every row carries
    data: tuple[str, ...] = ()  # files of $VQDNA_TEST_DATA the script reads
    beside: tuple[str, str] = ()  # (suffix, text): a second file written beside the JSON, and a line of it
    report: tuple[str, ...] = ()  # keys the JSON carries beside its rows (what the script derives from them)


SCRIPTS = {
    "windows_throughput": Expected("results", "megabases", [1], {"windows", "windows_seconds", "windows_nt_per_second", "peak_rss_mb"}),
    "tokenize_memory": Expected("runs", "megabases", [1], {"windows", "seconds", "peak_rss_mb", "peak_rss_per_tenth_of_the_run_mb"}),
    "pretrain_corpus_memory": Expected("runs", "mode", ["in_memory", "build", "mapped"], {"seconds", "peak_rss_mb", "rss_before_mb"}),
    "tokenize_throughput": Expected(
        "results", "tokenizer", ["vq", "hrq", "bpe_64", "kmer6_overlapping", "kmer6_nonoverlapping", "char"],
        {"precision", "nucleotides", "nt_per_second", "seconds_median"}, data=("genomes/lambda_virus.fa",),
    ),
    "padding": Expected(
        "results", "data",
        [f"{dataset}/{split}" for dataset, splits in (("prom_core_notata", "train dev test"), ("mouse_0", "train dev test"), ("EMP_H3", "dev test"))
         for split in splits.split() for _ in range(2)] + ["pretraining_windows_512nt"] * 2,
        {"tokenizer", "padding_shuffled", "padding_grouped", "padding_longest_first", "tokens_mean"},
        data=("gue/prom/prom_core_notata/train.csv", "gue/mouse/0/train.csv", "gue/EMP/H3/dev.csv", "genomes/lambda_virus.fa"),
    ),
    "tokenize_overlap": Expected(
        "results", "step_ms", [2.0, 20.0], {"busy_fraction", "busy_fraction_between_first_and_last_step", "wall_seconds", "mean_step_ms"},
        data=("genomes/lambda_virus.fa",),
    ),
    "pretrain_throughput": Expected("results", "model", ["vqdna", "bert"], {"tokens_per_second", "flops_per_token", "mfu", "params_matmul_N"}),
    "finetune_memory": Expected(
        "results", "stride", [1, 3, 4], {"length_nt", "tokens", "status", "gradient_checkpointing", "peak_memory_gb", "step_seconds"},
        report=("cost_model", "stride_speedups", "longest_length_within_budget"),
    ),
    "table7a_ablation": Expected(
        "results", "model", ["vq", "hrq"], {"code_size", "reconstruction_accuracy", "levels", "train_seconds"},
        data=("genomes/GCF_000005845.2_ASM584v2_genomic.fna.gz", "genomes/lambda_virus.fa", "genomes/22_20-21M.fa"),
        beside=(".md", "| 98.2 | not measured |"),  # our K = 128 cell beside the paper's Rec.
    ),
}


def run_benchmark(*args: str, test_data: Path | None = None) -> subprocess.CompletedProcess:
    """``python ARGS`` from the repository root with the package importable (and the test data, where given)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), *filter(None, [env.get("PYTHONPATH")])])
    if test_data is not None:
        env["VQDNA_TEST_DATA"] = str(test_data)
    return subprocess.run([sys.executable, *args], env=env, cwd=REPO, capture_output=True, text=True, timeout=300, check=False)


def test_every_benchmark_file_is_run_or_imported_by_a_test():
    assert sorted(path.stem for path in BENCHMARKS.glob("*.py")) == sorted([*SCRIPTS, *LIBRARIES, *RUN_ELSEWHERE])


@pytest.mark.parametrize("script", SCRIPTS)
def test_smoke_run_writes_every_row_with_what_a_reader_needs(script, tmp_path, request):
    expected = SCRIPTS[script]
    test_data = request.getfixturevalue("test_data") if expected.data else None
    for relative in expected.data:
        data_file(test_data, relative)
    output = tmp_path / f"{script}.json"
    result = run_benchmark(str(BENCHMARKS / f"{script}.py"), "--smoke", "--output", str(output), test_data=test_data)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    report = json.loads(output.read_text())
    rows = report[expected.rows]
    assert [row[expected.name] for row in rows] == expected.names
    for row in rows:
        assert expected.keys <= set(row), (row[expected.name], expected.keys - set(row))
    for key in expected.report:
        assert report.get(key), key
    if expected.beside:
        suffix, text = expected.beside
        assert text in output.with_suffix(suffix).read_text()


def import_benchmark(name: str, monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import importlib

    return importlib.import_module(name)


def test_finetune_memory_strides_turn_nucleotides_into_tokens_and_fit_the_cost_model(monkeypatch):
    finetune_memory = import_benchmark("finetune_memory", monkeypatch)
    assert [finetune_memory.tokens_for(length, stride) for length, stride in [(32768, 1), (32768, 8), (250_000, 8), (64, 3)]] == [
        32768, 4096, 31250, 22]
    a, b = 2e-4, 3e-7  # exact points of t = a T + b T^2 give back a and b, with a perfect fit
    fit = finetune_memory.fit_cost_model([(tokens, a * tokens + b * tokens**2) for tokens in (512, 1024, 4096, 8192, 32768)])
    assert abs(fit["a_seconds_per_token"] - a) < 1e-9 and abs(fit["b_seconds_per_token_squared"] - b) < 1e-12
    assert fit["r_squared"] == 1.0 and fit["max_abs_relative_error"] < 1e-6
    assert fit["tokens_where_quadratic_equals_linear"] == round(a / b)
    assert finetune_memory.fit_cost_model([(1024, 1.0), (1024, 1.1)]) is None  # one token count: nothing to fit

    def row(length, stride, *seconds, status="ok"):
        return {"run": 0, "setting": "s", "length_nt": length, "stride": stride, "tokens": finetune_memory.tokens_for(length, stride),
                "batch": 1, "status": status, "steps": len(seconds), "step_seconds": list(seconds),
                "step_seconds_last": seconds[-1] if seconds else None}

    speedups = finetune_memory.stride_speedups([row(32768, 1, 100.0), row(32768, 4, 24.0, 20.0), row(32768, 8, 16.0, 14.0),
                                                row(65536, 1, status="time_cap"), row(65536, 8, 30.0, 30.0)])
    assert [(e["length_nt"], e["stride"], e["speedup"], e.get("at_least_stride_fold")) for e in speedups] == [
        (32768, 4, 5.0, True), (32768, 8, 7.14, False), (65536, 8, None, None)]
    # one stride-1 step (the first) against the strided second steps: the first steps are compared too
    assert [e.get("speedup_first_steps") for e in speedups] == [4.17, 6.25, None]
    assert "time_cap" in speedups[-1]["why_none"]


def test_finetune_memory_summarise_derives_again_from_rows_old_and_new(tmp_path):
    """--summarise measures nothing; rows from before --strides (no stride, no tokens) count as one code per nt."""
    old = {"run": 0, "setting": "off", "length_nt": 1024, "batch": 1, "status": "ok", "steps": 2, "step_seconds": [4.0, 3.0],
           "step_seconds_last": 3.0}
    new = [{"run": 1, "setting": "off", "length_nt": length, "stride": stride, "tokens": length // stride, "batch": 1, "status": "ok",
            "steps": 1, "step_seconds": [seconds], "step_seconds_last": seconds}
           for length, stride, seconds in [(8192, 1, 40.0), (8192, 8, 1.0), (4096, 1, 11.0), (4096, 8, 0.5)]]
    output = tmp_path / "finetune.json"
    output.write_text(json.dumps({"runs": [{}, {}], "results": [old, *new]}))
    result = run_benchmark(str(BENCHMARKS / "finetune_memory.py"), "--summarise", "--output", str(output))
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(output.read_text())
    assert list(report) == ["runs", "cost_model_note", "cost_model", "stride_speedups", "results"]
    assert list(report["cost_model"]) == ["run=1,off"]  # run 0 has one token count: nothing to fit
    assert report["cost_model"]["run=1,off"]["relative_fit"]["max_abs_relative_error"] >= 0
    assert [(e["length_nt"], e["speedup"]) for e in report["stride_speedups"]] == [(8192, 40.0), (4096, 22.0)]


def test_a_smoke_run_without_output_is_refused_so_it_cannot_replace_a_real_result():
    result = run_benchmark(str(BENCHMARKS / "windows_throughput.py"), "--smoke")
    assert result.returncode == 2 and "--smoke needs --output" in result.stderr


def test_the_libraries_import():
    """Every smoke run above uses them too; this test names the library that broke."""
    script = (
        f"import sys; sys.path.insert(0, {str(BENCHMARKS)!r})\n"
        "import machine, smoke, timing\n"
        "print(machine.cpu_name(), len(timing.timed(lambda: None, 'cpu', repeats=2)))\n"
    )
    result = run_benchmark("-c", script)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.split()[-1] == "2"
