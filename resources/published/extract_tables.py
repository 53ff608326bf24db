"""Machine-read the paper's result tables (Tables 1-7) from its summary text into CSV.

    python resources/published/extract_tables.py                      # ../shared/paper/... -> resources/published/
    python resources/published/extract_tables.py --paper PATH --output-dir DIR

The summary file holds each table as a block of tab-separated lines: one or two
header lines (a second line when columns are grouped, e.g. ``PD`` over
``all notata tata``), then one line per row, then a blank line. A block is
found by the start of its first header line; its column labels are checked
against the ones below, so a column that moved in the paper fails loudly
instead of landing under the wrong dataset id. Cells are copied as printed
(``90.75`` stays ``90.75``, ``86+16`` stays text); ``N/A`` (Table 6, out of
memory) becomes an empty cell, never zero.

``key`` is a stable slug per published model (``KEYS``), the same in every
table, so the paper's rows line up across tables and beside this project's runs.
"""

from __future__ import annotations

import argparse
import csv
import re
import sys
from dataclasses import dataclass
from pathlib import Path

from vqdna import VqdnaError
from vqdna.artifacts import atomic_path

REPO = Path(__file__).resolve().parents[2]
PAPER = REPO.parent / "shared" / "paper" / "000_5611a3c6d314a237.txt"
OUTPUT_DIR = REPO / "resources" / "published"

# (method cell, tokenizer cell or "" where the table has no Tokenizer column) -> key.
KEYS = {
    ("DNABERT", "6-mer"): "dnabert_6mer",  # Table 1 only
    ("DNABERT", "3-mer"): "dnabert_3mer",  # Table 2
    ("DNABERT (3-mer)", ""): "dnabert_3mer",  # Tables 3-5
    ("DNABERT", ""): "dnabert",  # Table 6 does not say which k-mer
    ("NT-500M", "6-mer"): "nt_500m_1000g",  # Table 2 drops "-1000g"; 480M params, 50B tokens as NT-500M-1000g
    ("NT-500M-1000g (6-mer)", ""): "nt_500m_1000g",
    ("NT-2500M-1000g", "6-mer (non)"): "nt_2500m_1000g",  # Table 1: non-overlapping 6-mers
    ("NT-2500M", "6-mer"): "nt_2500m_1000g",
    ("NT-2500M-1000g (6-mer)", ""): "nt_2500m_1000g",
    ("HyenaDNA", "one-hot"): "hyenadna",
    ("HyenaDNA", ""): "hyenadna",
    ("DNABERT-2", "BPE (6-mer)"): "dnabert2",  # Table 1; its FT score is Table 4's DNABERT-2 Covid score
    ("DNABERT-2", "BPE"): "dnabert2",
    ("DNABERT-2 (BPE)", ""): "dnabert2",
    ("DNABERT-2", ""): "dnabert2",
    ("VQDNA", "VQVAE"): "vqdna_vq",
    ("VQDNA", ""): "vqdna_vq",  # the plain "VQDNA" rows are the VQ-VAE tokenizer (Table 1: VQDNA / VQVAE)
    ("VQDNA", "HRQ"): "vqdna_hrq",
    ("VQDNA (HRQ)", ""): "vqdna_hrq",
}
TEXT_COLUMNS = {"method", "tokenizer", "date"}
NUMBER = re.compile(r"\d+(\.\d+)?(\+\d+(\.\d+)?)?")  # "90.75", "86+16", "1.1+0.5"
PERCENT = re.compile(r"(\d+)%")


@dataclass(frozen=True)
class Table:
    name: str  # as the paper numbers it: "3", "7a"
    filename: str
    header: str  # start of the block's first header line
    columns: tuple[tuple[str, str], ...]  # (CSV column, the paper's label: group and sub-header joined by a space)
    models: tuple[str, ...] = ()  # expected keys in the paper's row order; () for a table without model rows
    first_column: int = 0  # Table 7 is three tables side by side in one block


def _group(group: str, subs: list[str]) -> list[str]:
    return [f"{group} {sub}" for sub in subs]


GUE_BASELINES = ("dnabert_3mer", "nt_500m_1000g", "nt_2500m_1000g", "dnabert2", "vqdna_vq", "vqdna_hrq")
EMP = ["H3", "H3K14ac", "H3K36me3", "H3K4me1", "H3K4me2", "H3K4me3", "H3K79me3", "H3K9ac", "H4", "H4ac"]
ABLATION = "Code size\tVQDNA"

TABLES = (
    Table(
        "1",
        "table1_tokenizer_efficiency.csv",
        "Method\tTokenizer\tUsage",
        (("method", "Method"), ("tokenizer", "Tokenizer"), ("usage", "Usage"), ("lin", "Lin."), ("ft", "FT")),
        ("dnabert_6mer", "nt_2500m_1000g", "hyenadna", "dnabert2", "vqdna_vq", "vqdna_hrq"),
    ),
    Table(
        "2",
        "table2_average_rank.csv",
        "Method\tDate\tTokenizer",
        (
            ("method", "Method"),
            ("date", "Date"),
            ("tokenizer", "Tokenizer"),
            ("params_m", "# Params. (M)"),
            ("flops_g", "FLOPs (G)"),
            ("train_b", "Train (B)"),
            ("average_rank", "Average Rank"),
        ),
        GUE_BASELINES,
    ),
    Table(
        "3",
        "table3_pd_cpd_tfp_human.csv",
        "Method\tPD\t",
        (
            ("method", "Method"),
            *zip([f"prom_300_{s}" for s in ("all", "notata", "tata")], _group("PD", ["all", "notata", "tata"])),
            *zip([f"prom_core_{s}" for s in ("all", "notata", "tata")], _group("CPD", ["all", "notata", "tata"])),
            *zip([f"human_tf_{i}" for i in range(5)], _group("TFP (Human)", [str(i) for i in range(5)])),
        ),
        GUE_BASELINES,
    ),
    Table(
        "4",
        "table4_tfp_mouse_cvc_ssp_eep.csv",
        "Method\tTFP (Mouse)\t",
        (
            ("method", "Method"),
            *zip([f"mouse_tf_{i}" for i in range(5)], _group("TFP (Mouse)", [str(i) for i in range(5)])),
            ("covid", "CVC Covid"),
            ("splice_reconstructed", "SSP Reconstruction"),
            *zip(["eep_k562", "eep_jurkat", "eep_h1"], _group("EEP (gRNA)", ["K562", "Jurkat", "H1"])),
        ),
        GUE_BASELINES,
    ),
    Table(
        "5",
        "table5_emp.csv",
        "Method\tEpigenetic Marks Prediction\t",
        (("method", "Method"), *zip([f"emp_{m.lower()}" for m in EMP], _group("Epigenetic Marks Prediction", EMP))),
        GUE_BASELINES,
    ),
    Table(
        "6",
        "table6_species.csv",
        "Method\t1k\t20k",
        (("method", "Method"), *((f"species_{n}", n) for n in ("1k", "20k", "32k", "250k", "450k"))),
        ("hyenadna", "dnabert", "dnabert2", "vqdna_hrq"),
    ),
    Table(
        "7a",
        "table7a_code_size.csv",
        ABLATION,
        (
            ("code_size", "Code size"),
            ("vqdna_rec", "VQDNA Rec."),
            ("vqdna_lin", "VQDNA Lin."),
            ("hrq_rec", "+HRQ Rec."),
            ("hrq_lin", "+HRQ Lin."),
        ),
    ),
    Table(
        "7b",
        "table7b_code_dim.csv",
        ABLATION,
        (
            ("code_dim", "Code dim."),
            ("vqdna_rec", "VQDNA Rec."),
            ("vqdna_lin", "VQDNA Lin."),
            ("hrq_rec", "+HRQ Rec."),
            ("hrq_lin", "+HRQ Lin."),
        ),
        first_column=5,
    ),
    Table(
        "7c",
        "table7c_mask_ratio.csv",
        ABLATION,
        (
            # The paper prints "15%"; written as the fraction 0.15 because config.yaml's pretrain mask_ratio is one.
            ("mask_ratio", "Mask ratio"),
            ("vqdna_h3", "VQDNA H3"),
            ("vqdna_cvc", "VQDNA CVC"),
            ("hrq_h3", "+HRQ H3"),
            ("hrq_cvc", "+HRQ CVC"),
        ),
        first_column=10,
    ),
)


@dataclass(frozen=True)
class Block:
    labels: list[str]  # one per column: group and sub-header joined by a space
    rows: list[list[str]]  # cells as printed, every row as wide as the header


def read_block(lines: list[str], header: str, where: str) -> Block:
    """The tab-separated block whose first header line starts with ``header``, up to the next blank line."""
    starts = [i for i, line in enumerate(lines) if line.startswith(header)]
    if len(starts) != 1:
        found = "not found" if not starts else f"found {len(starts)} times (lines {', '.join(str(i + 1) for i in starts)})"
        raise VqdnaError(f"{where}: header line starting {header!r} {found}")
    start = starts[0]
    groups = [cell.strip() for cell in lines[start].split("\t")]
    width = len(groups)
    body = []
    for line in lines[start + 1 :]:
        if not line.strip():
            break
        body.append(line)
    subs = [""] * width
    if body and body[0].startswith("\t"):  # grouped columns: the second header line has an empty first cell
        subs = [cell.strip() for cell in body.pop(0).split("\t")]
        if len(subs) != width:
            raise VqdnaError(f"{where}: the second header line has {len(subs)} cells, the first {width}")
    labels, group = [], ""
    for top, sub in zip(groups, subs):
        group = top or group  # a group label spans the empty cells to its right
        labels.append(f"{group} {sub}".strip())
    rows = []
    for offset, line in enumerate(body):
        cells = [cell.strip() for cell in line.split("\t")]
        if len(cells) != width:
            raise VqdnaError(f"{where}: row {offset + 1} ({cells[0]!r}) has {len(cells)} cells, the header {width}")
        rows.append(cells)
    if not rows:
        raise VqdnaError(f"{where}: no rows under the header line starting {header!r}")
    return Block(labels, rows)


def _value(column: str, text: str, where: str) -> str:
    if column in TEXT_COLUMNS:
        return text
    if text == "N/A":  # Table 6: out of memory
        return ""
    if column == "mask_ratio":
        match = PERCENT.fullmatch(text)
        if match:
            return f"{int(match.group(1)) / 100:g}"
    elif NUMBER.fullmatch(text):
        return text
    raise VqdnaError(f"{where}: column {column}: {text!r} is not a number as expected")


def extract_table(block: Block, table: Table, paper: Path) -> tuple[list[str], list[list[str]]]:
    """CSV header and rows of one table, read from its block."""
    where = f"{paper}: Table {table.name}"
    end = table.first_column + len(table.columns)
    labels = block.labels[table.first_column : end]
    expected = [label for _, label in table.columns]
    if labels != expected:
        raise VqdnaError(f"{where}: columns {labels} where {expected} were expected")
    names = [name for name, _ in table.columns]
    rows, keys = [], []
    for cells in block.rows:
        record = dict(zip(names, cells[table.first_column : end]))
        values = [_value(name, record[name], f"{where}, row {cells[0]!r}") for name in names]
        if table.models:
            label = (record["method"], record.get("tokenizer", ""))
            if label not in KEYS:
                raise VqdnaError(f"{where}: row {' / '.join(filter(None, label))!r} has no key in KEYS")
            keys.append(KEYS[label])
            values.insert(0, KEYS[label])
        rows.append(values)
    if table.models and tuple(keys) != table.models:
        missing = [key for key in table.models if key not in keys]
        detail = f"rows for {', '.join(missing)} not found" if missing else f"rows {keys} where {list(table.models)} expected"
        raise VqdnaError(f"{where}: {detail}")
    return (["key", *names] if table.models else names), rows


def extract(paper: Path) -> dict[str, tuple[list[str], list[list[str]]]]:
    """File name -> (CSV header, rows) for every table; raises VqdnaError naming the paper and the table."""
    try:
        lines = paper.read_text(encoding="utf-8").splitlines()
    except OSError as err:
        raise VqdnaError(f"{paper}: cannot read the paper summary ({err.strerror or err})") from None
    blocks: dict[str, Block] = {}
    for table in TABLES:
        if table.header not in blocks:
            sharing = "/".join(t.name for t in TABLES if t.header == table.header)
            block = read_block(lines, table.header, f"{paper}: Table {sharing}")
            covered = sum(len(t.columns) for t in TABLES if t.header == table.header)
            if covered != len(block.labels):
                raise VqdnaError(f"{paper}: Table {sharing}: {len(block.labels)} columns, {covered} expected")
            blocks[table.header] = block
    return {table.filename: extract_table(blocks[table.header], table, paper) for table in TABLES}


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--paper", type=Path, default=PAPER, help=f"paper summary text (default: {PAPER})")
    parser.add_argument("--output-dir", type=Path, default=OUTPUT_DIR, help=f"where the CSVs go (default: {OUTPUT_DIR})")
    args = parser.parse_args(argv)
    try:
        tables = extract(args.paper)
    except VqdnaError as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    for filename, (header, rows) in tables.items():
        write_csv(args.output_dir / filename, header, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
