# The plan of the config and its sheets (vqdna/plan.py), wildcard constraints, and the
# input and param functions through which every rule reads the plan.
import hashlib
import re
import shlex
import sys
from pathlib import Path

from snakemake.exceptions import WorkflowError

sys.path.insert(0, workflow.basedir)
# Light modules only (no torch, no pysam); plan.py loads vqdna.archive for archive: sources alone
from vqdna import STAGE_VERSIONS, VqdnaError
from vqdna.plan import SPLITS, TABLE_FILES, build_plan, canonical_json

# Re-raised as a WorkflowError: Snakemake prints its one line without the frames inside vqdna/plan.py.
try:
    PLAN = build_plan(config, Path(workflow.basedir, "workflow", "schemas"))
except VqdnaError as err:
    raise WorkflowError(str(err)) from None

for _skipped in PLAN.skipped_datasets:
    print(f"vqdna: dataset {_skipped.name} skipped: {_skipped.reason}", file=sys.stderr)
for _genome in PLAN.unverified_plain_downloads:
    print(
        f"vqdna: genome {_genome}: a plain http/ftp source without a sha256 in the sheet; its first download is"
        f" trusted and its sha256 recorded (resources/genomes/{_genome}.source.json): put a sha256 in the sheet",
        file=sys.stderr,
    )

ENV = "../../envs/vqdna.yaml"

# Every rule calls `python -m vqdna`. It reaches the package through the
# workflow's folder, so it also runs in conda envs that carry only the
# dependencies (Snakemake copies env files elsewhere, which breaks a relative
# `pip: -e .`). The mirror and the compile modes (only those set: at the
# defaults the prefix is as before) are exported here, read at run time and
# not params: switching them reruns nothing. A prefix is not part of a rule's
# code, so moving the repository reruns nothing either.
_shell_prefix = [
    # (a prefix is formatted like a shell command: doubled braces stay literal)
    f"export PYTHONPATH={shlex.quote(workflow.basedir)}${{{{PYTHONPATH:+:$PYTHONPATH}}}};",
]
if PLAN.mirror:
    _shell_prefix.append(f"export VQDNA_MIRROR={shlex.quote(PLAN.mirror)};")
for _variable, _mode in PLAN.compile.environment().items():
    _shell_prefix.append(f"export {_variable}={shlex.quote(_mode)};")
shell.prefix(f"{' '.join(_shell_prefix)} ")


def _alternatives(names):
    return "|".join(re.escape(n) for n in sorted(names)) or "(?!)"


wildcard_constraints:
    genome=_alternatives(PLAN.genomes),
    tokenizer=_alternatives(PLAN.tokenizers),
    run=_alternatives(PLAN.runs),
    dataset=_alternatives(PLAN.datasets),
    split="|".join(SPLITS),
    seed=r"\d+",


# ---- params shared by rules --------------------------------------------------------------------


def folder_of(path):
    return str(Path(path).parent)


def output_folder(wildcards, output):
    """The folder a stage writes as a whole (atomically): the parent of its first output."""
    return folder_of(output[0])


def tokenizer_folder(wildcards, input):
    return folder_of(input.tokenizer_config)


def pretrained_folder(wildcards, input):
    return folder_of(input.pretrained)


def dataset_folder(wildcards, input):
    return folder_of(input.dataset[0])


def tokens_folder(wildcards, input):
    """A dataset's tokens (results/dataset_tokens/{tokenizer}/{dataset}), beside the dataset itself."""
    return folder_of(input.tokens[0])


# ---- download_genome, download_assembly_report ---------------------------------------------------


def get_local_genome_source(wildcards):
    """A local source file is an input (editing it reruns the download); URLs are not files."""
    source_file = PLAN.genomes[wildcards.genome].source_file
    return [source_file] if source_file else []


def get_genome_source(wildcards):
    return PLAN.genomes[wildcards.genome].source


def get_genome_sha256(wildcards):
    return PLAN.genomes[wildcards.genome].sha256


def get_assembly_report_source(wildcards):
    return PLAN.genomes[wildcards.genome].assembly_report


def get_assembly_report_sha256(wildcards):
    return PLAN.genomes[wildcards.genome].assembly_report_sha256


# ---- download_archive, unpack_archive -----------------------------------------------------------


def get_archive_source(wildcards):
    return PLAN.archives[wildcards.archive].source


def get_archive_sha256(wildcards):
    return PLAN.archives[wildcards.archive].sha256


# ---- train_tokenizer, evaluate_tokenizer, tokenize_genome ------------------------------------


def get_tokenizer_windows(wildcards):
    return PLAN.tokenizers[wildcards.tokenizer].windows


def get_tokenizer_settings(wildcards):
    return canonical_json(PLAN.tokenizers[wildcards.tokenizer].training_settings)


def get_train_tokenizer_version(wildcards):
    return STAGE_VERSIONS["train_tokenizer"][PLAN.tokenizers[wildcards.tokenizer].type]


def get_tokenizer_evaluation(wildcards):
    return canonical_json(PLAN.tokenizers[wildcards.tokenizer].evaluation_settings)


def get_tokenizer_of_rule(wildcards):
    return PLAN.tokenizers[wildcards.tokenizer].inputs


# ---- pretrain_mlm ------------------------------------------------------------------------------


def get_pretrain_inputs(wildcards):
    return PLAN.pretrain_inputs(wildcards.run)


def get_run_settings(wildcards):
    return canonical_json(PLAN.runs[wildcards.run].model_settings)


def get_run_gpus(wildcards):
    return PLAN.runs[wildcards.run].gpus


def get_run_nodes(wildcards):
    return PLAN.runs[wildcards.run].nodes


# On one node the SLURM executor plugin asks for `--gpus=N` and runs the job in an
# `srun` step. On several it asks for one task and N GPUs per node, and an `mpi`
# resource keeps it from wrapping the job in a one-node step: `vqdna pretrain
# --nodes M` then starts its own `srun` step across the nodes (torchrun on each).
# A resource that is None is not set.
def get_run_single_node_gpus(wildcards):
    return get_run_gpus(wildcards) if get_run_nodes(wildcards) == 1 else None


def get_run_mpi(wildcards):
    return "srun" if get_run_nodes(wildcards) > 1 else None


def get_run_tasks(wildcards):
    return get_run_nodes(wildcards) if get_run_nodes(wildcards) > 1 else None


def get_run_slurm_extra(wildcards):
    if get_run_nodes(wildcards) == 1:
        return None
    return f"--ntasks-per-node=1 --gpus-per-node={get_run_gpus(wildcards)}"


# ---- prepare_dataset ---------------------------------------------------------------------------


def get_dataset_inputs(wildcards):
    return PLAN.dataset_inputs(wildcards.dataset)


def get_dataset_genome_args(wildcards):
    return PLAN.dataset_genome_args(wildcards.dataset)


def get_dataset_spec(wildcards):
    return canonical_json(PLAN.datasets[wildcards.dataset].build_spec)


# ---- tokenize_dataset ----------------------------------------------------------------------------


def get_dataset_tokens_inputs(wildcards):
    return PLAN.dataset_tokens_inputs(wildcards.tokenizer, wildcards.dataset)


def get_dataset_max_length(wildcards):
    return PLAN.datasets[wildcards.dataset].max_length


# ---- finetune, kmer_baseline, linear_probe -----------------------------------------------------


def get_finetune_inputs(wildcards):
    return PLAN.finetune_inputs(wildcards.run, wildcards.dataset)


def get_finetune_spec(wildcards):
    return canonical_json(PLAN.datasets[wildcards.dataset].finetune_spec)


def get_scoring_spec(wildcards):
    return canonical_json(PLAN.datasets[wildcards.dataset].scoring_spec)


def get_finetune_settings(wildcards):
    """The `finetune:` block less `runs` and `seeds` (with the run's own `finetune:` keys): adding a seed or a run reruns no existing job."""
    return canonical_json(PLAN.finetune_settings_of(wildcards.run))


def get_finetune_version(wildcards):
    """Per head_norm: a fix to one reruns only the runs that use it. Unset is FinetuneSettings' "none"."""
    return STAGE_VERSIONS["finetune"][
        PLAN.finetune_settings_of(wildcards.run).get("head_norm", "none")
    ]


def get_kmer_settings(wildcards):
    return canonical_json(PLAN.kmer_settings)


def get_probe_inputs(wildcards):
    return PLAN.probe_inputs(wildcards.tokenizer, wildcards.dataset)


def get_probe_settings(wildcards):
    return canonical_json(PLAN.probe_settings)


# ---- analyse_codebook --------------------------------------------------------------------------


def get_analysis_inputs(wildcards):
    return PLAN.analysis_inputs(wildcards.tokenizer, wildcards.dataset)


def get_analysis_settings(wildcards):
    return canonical_json(PLAN.analysis_settings)


# ---- plots ------------------------------------------------------------------------------------


def get_tokenizer_curves_option(wildcards):
    curves = PLAN.tokenizer_curves(wildcards.tokenizer)
    return f"--curves {shlex.quote(curves)}" if curves else ""


def get_finetuning_plot_inputs(wildcards):
    return PLAN.finetuning_plot_inputs(wildcards.dataset)


def get_draw_of(wildcards):
    return canonical_json(PLAN.draw_of)


def get_plots(wildcards):
    return PLAN.plots


# ---- make_tables, all --------------------------------------------------------------------------


def get_table_inputs(wildcards):
    return PLAN.table_inputs


def get_tables_plan(wildcards):
    return canonical_json(PLAN.tables_plan)


def published_digest():
    """sha256 of the published tables shipped in resources/published: editing them reruns
    make_tables, moving the repository does not (their paths are not inputs)."""
    digest = hashlib.sha256()
    for path in sorted(Path(workflow.basedir, "resources", "published").glob("*.csv")):
        digest.update(path.name.encode() + path.read_bytes())
    return digest.hexdigest()


def get_final_outputs(wildcards):
    return PLAN.final_outputs
