"""VQDNA: learned vector-quantized DNA tokenizers, MLM pretraining and LoRA fine-tuning."""

__version__ = "0.1.0"

# The workflow passes each stage's number as a param: bump one when a code change
# alters what that stage writes, and Snakemake reruns it (and what depends on it).
# Snakemake's own code trigger does not see the package. train_tokenizer's is per
# tokenizer type, so a change to the k-mer ids reruns no learned tokenizer.
STAGE_VERSIONS = {
    "download_genome": 1,
    "download_archive": 1,
    "unpack_archive": 1,
    "make_windows": 1,
    "train_tokenizer": {"vq": 3, "hrq": 3, "kmer": 4, "bpe": 3, "char": 3},  # kmer 4: 4^k + 1 ids over ACGT
    "evaluate_tokenizer": 3,
    "tokenize_genome": 1,
    "pretrain_mlm": 3,
    "prepare_dataset": 2,
    "tokenize_dataset": 1,
    "finetune": {"none": 2, "batch": 3},  # per head_norm; batch 3: the best epoch is scored with its own running statistics
    "kmer_baseline": 1,
    "linear_probe": 1,
    "make_tables": 4,  # 4: paired.csv gains draws and per_draw
    "analyse_codebook": 2,
    "plots": 1,
}


class VqdnaError(Exception):
    """An error the user can fix; the CLI prints it as one line, without a traceback."""
