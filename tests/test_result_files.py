"""The one parser of result paths that the paper tables and the comparison tables share."""

import json

import pytest

from vqdna import VqdnaError
from vqdna.result_files import read_result_file


def _write(path, value):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value))
    return path


@pytest.mark.parametrize(
    "relative, stage, names",
    [
        ("finetune/vq_bert/mouse_tf_0/seed2/metrics.json", "finetune", {"run": "vq_bert", "dataset": "mouse_tf_0"}),
        ("kmer_baseline/mouse_tf_0/seed2/metrics.json", "kmer_baseline", {"dataset": "mouse_tf_0"}),
        ("probe/hrq/emp_h3/metrics.json", "probe", {"tokenizer": "hrq", "dataset": "emp_h3"}),
        ("tokenizers/hrq/metrics.json", "tokenizers", {"tokenizer": "hrq"}),
        ("pretrain/vq_bert/metrics.json", "pretrain", {"run": "vq_bert"}),
    ],
)
def test_every_contract_path_is_named_by_its_parts(tmp_path, relative, stage, names):
    # A folder named "results" above the project's own must not be taken for it.
    root = tmp_path / "results" / "project" / "results"
    result = read_result_file(_write(root / relative, {"seed": 2, "test": {"mcc": 0.5}}))
    assert result.stage == stage
    assert result.results_root == root
    assert result.seed == 2 and result.metrics["test"] == {"mcc": 0.5}
    assert {key: getattr(result, key) for key in ("run", "dataset", "tokenizer") if getattr(result, key)} == names


@pytest.mark.parametrize(
    "relative, message",
    [
        ("windows/ecoli/metrics.json", "not a result file the tables know"),
        ("finetune/vq_bert/seed0/metrics.json", "3 folder(s) below results/finetune/, not 2"),
        ("probe/hrq/emp_h3/summary.json", "not a result file the tables know"),
    ],
)
def test_a_path_outside_the_contract_is_one_line_naming_it(tmp_path, relative, message):
    path = _write(tmp_path / "results" / relative, {})
    with pytest.raises(VqdnaError, match="^" + str(path).replace(".", r"\.") + ": ") as error:
        read_result_file(path)
    assert message in str(error.value) and "\n" not in str(error.value)


def test_an_unreadable_file_says_to_rerun_its_job(tmp_path):
    path = tmp_path / "results" / "pretrain" / "vq_bert" / "metrics.json"
    path.parent.mkdir(parents=True)
    path.write_text('{"seed": 0,')
    with pytest.raises(VqdnaError, match="unreadable result file .*rerun the job that wrote it"):
        read_result_file(path)
