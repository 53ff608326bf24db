"""The command line: every subcommand documents itself; the conda env agrees with pyproject and every rule names it."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from vqdna.cli import build_parser

# Written out, not read from the parser: a subcommand that disappears from the parser must fail here.
RULE_SUBCOMMANDS = [  # the rules of workflow/rules/*.smk run `python -m vqdna <these>`
    "download", "fetch-file", "fetch-archive", "unpack-archive", "windows", "train-tokenizer", "evaluate-tokenizer",
    "tokenize", "pretrain", "prepare-dataset", "tokenize-dataset", "finetune", "kmer-baseline", "probe", "analyse-codebook", "tables", "plot",
]
USER_SUBCOMMANDS = ["inspect", "embed", "predict"]  # no rule runs these; the README shows users how
SUBCOMMANDS = RULE_SUBCOMMANDS + USER_SUBCOMMANDS


def test_the_parser_has_exactly_the_subcommands_rules_and_users_rely_on():
    assert sorted(build_parser()._subparsers._group_actions[0].choices) == sorted(SUBCOMMANDS)


def test_the_rules_run_exactly_the_rule_subcommands_and_the_readme_shows_the_others():
    rules = "\n".join(path.read_text() for path in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    assert sorted(set(re.findall(r"python -m vqdna ([a-z-]+)", rules))) == sorted(RULE_SUBCOMMANDS)
    readme = (REPO / "README.md").read_text()
    assert [name for name in USER_SUBCOMMANDS if f"vqdna {name} " not in readme] == []


@pytest.mark.parametrize("subcommand", SUBCOMMANDS)
def test_every_subcommand_has_help(subcommand):
    result = subprocess.run([sys.executable, "-m", "vqdna", subcommand, "--help"], capture_output=True, text=True)
    assert result.returncode == 0
    assert result.stdout.startswith(f"usage: vqdna {subcommand}")


def test_user_errors_are_one_line_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "vqdna", "inspect", str(tmp_path / "missing.parquet")], capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().count("\n") == 0 and result.stderr.startswith("error:")


def _name(requirement: str) -> str:
    return re.split(r"[\s<>=!~\[;]", requirement.strip(), maxsplit=1)[0].lower().replace("_", "-")


def test_conda_env_lists_the_same_runtime_packages_as_pyproject():
    """envs/vqdna.yaml carries what the rules import; pyproject adds only the workflow tools themselves."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    env = yaml.safe_load((REPO / "envs" / "vqdna.yaml").read_text())["dependencies"]
    conda_names = {"pytorch": "torch", "matplotlib-base": "matplotlib"}
    in_env = {conda_names.get(_name(d), _name(d)) for d in env if isinstance(d, str)} - {"python"}
    workflow_tools = {"snakemake", "snakemake-executor-plugin-slurm"}
    assert in_env == {_name(d) for d in project} - workflow_tools


def test_every_rule_that_runs_a_command_names_the_conda_env():
    """`--software-deployment-method conda` builds envs/vqdna.yaml for every job, as Snakemake itself reads the rules."""
    from snakemake.api import SnakemakeApi
    from snakemake.settings.types import OutputSettings, ResourceSettings

    with SnakemakeApi(OutputSettings()) as api:
        workflow_api = api.workflow(resource_settings=ResourceSettings(), snakefile=REPO / "Snakefile", workdir=REPO)
        workflow_api.dag()  # parses the Snakefile and its rule files
        rules = [rule for rule in workflow_api._workflow.rules if rule.shellcmd is not None]
    assert len(rules) >= 10
    for rule in rules:
        assert rule.conda_env is not None, f"rule {rule.name} names no conda env"
        assert (Path(rule.snakefile).parent / rule.conda_env).resolve() == REPO / "envs" / "vqdna.yaml", rule.name


def test_every_rule_that_asks_for_a_gpu_goes_to_the_slurm_profiles_gpu_partition():
    """A rule with `gpu=1` sent to the CPU partition waits forever on a cluster: the profile names each one."""
    rules = "\n".join(path.read_text() for path in sorted((REPO / "workflow" / "rules").glob("*.smk")))
    gpu_rules = {m.group(1) for m in re.finditer(r"^rule (\w+):\n(?:(?!rule ).*\n)*?\s+gpu=1,", rules, re.MULTILINE)}
    assert {"train_tokenizer", "tokenize_genome", "tokenize_dataset", "finetune", "linear_probe"} <= gpu_rules
    profile = yaml.safe_load((REPO / "slurm" / "profile.yaml").read_text())
    partitions = {rule: settings.get("slurm_partition") for rule, settings in profile["set-resources"].items()}
    assert {rule: partitions.get(rule) for rule in gpu_rules} == dict.fromkeys(gpu_rules, "gpu")
