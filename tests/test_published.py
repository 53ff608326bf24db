"""The paper's published tables: CSVs machine-read from the paper summary, one key per model across tables."""

from __future__ import annotations

import csv
import importlib.util
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PUBLISHED = REPO / "resources" / "published"
SCRIPT = PUBLISHED / "extract_tables.py"
PAPER_NAME = "000_5611a3c6d314a237.txt"
CSV_FILES = [
    "table1_tokenizer_efficiency.csv",
    "table2_average_rank.csv",
    "table3_pd_cpd_tfp_human.csv",
    "table4_tfp_mouse_cvc_ssp_eep.csv",
    "table5_emp.csv",
    "table6_species.csv",
    "table7a_code_size.csv",
    "table7b_code_dim.csv",
    "table7c_mask_ratio.csv",
]
GUE_DATASETS = [
    *(f"prom_300_{s}" for s in ("all", "notata", "tata")),
    *(f"prom_core_{s}" for s in ("all", "notata", "tata")),
    *(f"human_tf_{i}" for i in range(5)),
    *(f"mouse_tf_{i}" for i in range(5)),
    "covid",
    "splice_reconstructed",
    *(f"emp_{m}" for m in ("h3", "h3k14ac", "h3k36me3", "h3k4me1", "h3k4me2", "h3k4me3", "h3k79me3", "h3k9ac", "h4", "h4ac")),
]
EEP_DATASETS = ["eep_k562", "eep_jurkat", "eep_h1"]
SPECIES_DATASETS = ["species_1k", "species_20k", "species_32k", "species_250k", "species_450k"]
MODEL_TABLES = CSV_FILES[:6]


def _read(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="") as handle:
        reader = csv.DictReader(handle)
        return list(reader.fieldnames or []), list(reader)


def _row(filename: str, column: str, value: str) -> dict[str, str]:
    (row,) = [r for r in _read(PUBLISHED / filename)[1] if r[column] == value]
    return row


@pytest.fixture(scope="module")
def extractor():
    spec = importlib.util.spec_from_file_location("extract_tables", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the script's classes are built
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        sys.modules.pop(spec.name, None)


def test_extraction_from_the_paper_reproduces_the_committed_files_byte_for_byte(test_data, tmp_path):
    paper = test_data.parent / "paper" / PAPER_NAME  # test_data skips only when VQDNA_TEST_DATA is unset
    if not paper.is_file():
        pytest.fail(f"VQDNA_TEST_DATA is set but the paper summary {paper} is missing; that is an error, not a skip")
    out = tmp_path / "published"
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--paper", str(paper), "--output-dir", str(out)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == sorted(CSV_FILES)
    for name in CSV_FILES:
        assert (out / name).read_bytes() == (PUBLISHED / name).read_bytes(), name


def test_committed_values_match_the_paper_as_printed():
    table1 = _row("table1_tokenizer_efficiency.csv", "key", "vqdna_hrq")
    assert table1 == {"key": "vqdna_hrq", "method": "VQDNA", "tokenizer": "HRQ", "usage": "100", "lin": "48.87", "ft": "74.32"}
    table2 = _row("table2_average_rank.csv", "key", "vqdna_vq")
    assert (table2["params_m"], table2["flops_g"], table2["average_rank"]) == ("86+16", "1.1+0.5", "2")
    assert _row("table3_pd_cpd_tfp_human.csv", "key", "vqdna_hrq")["prom_300_all"] == "90.75"
    assert _row("table3_pd_cpd_tfp_human.csv", "key", "dnabert2")["prom_300_all"] == "86.77"
    assert _row("table4_tfp_mouse_cvc_ssp_eep.csv", "key", "vqdna_vq")["covid"] == "73.16"
    assert _row("table4_tfp_mouse_cvc_ssp_eep.csv", "key", "nt_500m_1000g")["mouse_tf_3"] == "33.07"
    assert _row("table5_emp.csv", "key", "vqdna_hrq")["emp_h4ac"] == "50.69"
    assert _row("table5_emp.csv", "key", "nt_2500m_1000g")["emp_h3k4me2"] == "30.28"
    species = _row("table6_species.csv", "key", "dnabert2")
    assert species["species_32k"] == "99.28" and species["species_250k"] == "" and species["species_450k"] == ""
    assert _row("table6_species.csv", "key", "hyenadna")["species_450k"] == "99.40"
    code_dim = _row("table7b_code_dim.csv", "code_dim", "384")
    assert code_dim == {"code_dim": "384", "vqdna_rec": "99.5", "vqdna_lin": "44.8", "hrq_rec": "99.6", "hrq_lin": "48.9"}
    mask = _row("table7c_mask_ratio.csv", "mask_ratio", "0.25")
    assert mask == {"mask_ratio": "0.25", "vqdna_h3": "78.6", "vqdna_cvc": "73.2", "hrq_h3": "79.2", "hrq_cvc": "74.3"}
    assert [r["mask_ratio"] for r in _read(PUBLISHED / "table7c_mask_ratio.csv")[1]] == ["0.15", "0.2", "0.25", "0.3"]


@pytest.mark.parametrize("filename", MODEL_TABLES)
def test_each_model_table_has_four_to_six_rows_with_unique_keys_and_both_vqdna_variants_where_shown(filename):
    header, rows = _read(PUBLISHED / filename)
    keys = [r["key"] for r in rows]
    assert header[:2] == ["key", "method"]
    assert 4 <= len(rows) <= 6 and len(set(keys)) == len(keys)
    assert "vqdna_hrq" in keys and (filename == "table6_species.csv" or "vqdna_vq" in keys)


def test_every_gue_and_eep_dataset_is_a_column_of_exactly_one_of_tables_3_to_5():
    columns = [c for name in MODEL_TABLES[2:5] for c in _read(PUBLISHED / name)[0] if c not in ("key", "method")]
    assert len(GUE_DATASETS) == 28 and len(EEP_DATASETS) == 3
    assert sorted(columns) == sorted(GUE_DATASETS + EEP_DATASETS)  # each once, and nothing else


def test_species_table_columns_are_the_species_dataset_ids():
    assert _read(PUBLISHED / "table6_species.csv")[0] == ["key", "method", *SPECIES_DATASETS]


TABLE1 = """\
Method\tTokenizer\tUsage\tLin.\tFT
DNABERT\t6-mer\t47\t23.54\t55.50
NT-2500M-1000g\t6-mer (non)\t47\t23.54\t66.73
HyenaDNA\tone-hot\t100\t5.47
"""


def test_a_row_with_a_missing_cell_is_a_one_line_error_naming_the_paper_and_table(extractor, tmp_path, capsys):
    paper = tmp_path / "paper.txt"
    paper.write_text("prose\n\n" + TABLE1 + "\n表1 caption\n")
    out = tmp_path / "out"
    assert extractor.main(["--paper", str(paper), "--output-dir", str(out)]) == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and str(paper) in message and "Table 1" in message and "HyenaDNA" in message
    assert not out.exists()  # nothing is written when any table fails


def test_a_missing_header_is_a_one_line_error_naming_the_paper_and_table(extractor, tmp_path, capsys):
    paper = tmp_path / "paper.txt"
    paper.write_text(TABLE1.replace("Method\tTokenizer", "Model\tTokenizer"))
    assert extractor.main(["--paper", str(paper), "--output-dir", str(tmp_path / "out")]) == 1
    message = capsys.readouterr().err
    assert message.count("\n") == 1 and str(paper) in message and "Table 1" in message and "not found" in message
