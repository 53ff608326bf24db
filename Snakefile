# VQDNA: learned DNA tokenizers (VQ-VAE, HRQ) -> MLM pretraining -> LoRA fine-tuning -> tables.
# The demo:  snakemake --cores all            A cluster:  snakemake --cores all --profile slurm
from snakemake.utils import min_version

min_version("9.0")


# The demo's config, unless --configfile names another: Snakemake would merge the
# two, and the demo's tokenizers and runs would join the paper's.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/download.smk"
include: "workflow/rules/archive.smk"
include: "workflow/rules/windows.smk"
include: "workflow/rules/tokenizer.smk"
include: "workflow/rules/pretrain.smk"
include: "workflow/rules/datasets.smk"
include: "workflow/rules/dataset_tokens.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/kmer_baseline.smk"
include: "workflow/rules/probe.smk"
include: "workflow/rules/codebook_analysis.smk"
include: "workflow/rules/tables.smk"
include: "workflow/rules/plots.smk"


rule all:
    default_target: True
    input:
        get_final_outputs,
