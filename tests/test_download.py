"""Fetching genomes: sha256 checks, clean failures, http downloads and the offline mirror."""

from __future__ import annotations

import hashlib
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pysam
import pytest

from vqdna import VqdnaError
from vqdna.download import fetch_genome

LAMBDA = "genomes/lambda_virus.fa"
LAMBDA_CONTIG = "gi|9626243|ref|NC_001416.1|"
LAMBDA_LENGTH = 48502
WRONG_SHA256 = "0" * 64
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")


@pytest.fixture
def lambda_source(test_data) -> Path:
    path = test_data / LAMBDA
    if not path.is_file():
        pytest.fail(f"test data file {path} is missing")
    return path


@pytest.fixture
def lambda_sha256(lambda_source) -> str:
    return hashlib.sha256(lambda_source.read_bytes()).hexdigest()


@pytest.fixture
def no_proxy(monkeypatch):
    """Requests to 127.0.0.1 go straight to it, whatever proxy the machine running the tests uses."""
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def http_server(tmp_path, lambda_source, no_proxy):
    """A server on 127.0.0.1 serving a copy of lambda_virus.fa; ``requests`` lists every connection's path.

    Each status put in ``failures`` answers one request instead of the file, first in first out.
    """
    served = tmp_path / "served"
    served.mkdir()
    shutil.copyfile(lambda_source, served / lambda_source.name)
    requests: list[str] = []
    failures: list[int] = []

    class CountingHandler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, directory=str(served), **kwargs)

        def handle_one_request(self):
            requests.append("connection")
            super().handle_one_request()

        def do_GET(self):
            if failures:
                self.send_error(failures.pop(0))
            else:
                super().do_GET()

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), CountingHandler)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield SimpleNamespace(url=f"http://127.0.0.1:{server.server_port}", requests=requests, failures=failures)
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def _sidecar(output: Path, genome: str) -> dict:
    return json.loads(output.with_name(f"{genome}.source.json").read_text())


def _stored_equals_original(stored: Path, original: Path) -> bool:
    lines = original.read_text().splitlines()
    sequence = "".join(line for line in lines if not line.startswith(">"))
    with pysam.FastaFile(str(stored)) as fasta:
        return list(fasta.references) == [LAMBDA_CONTIG] and fasta.fetch(LAMBDA_CONTIG) == sequence


def _entries(folder: Path) -> list[str]:
    """Everything in ``folder``, hidden temp files and folders included."""
    return sorted(p.name for p in folder.iterdir())


def test_local_source_with_right_sha256_is_stored_bgzipped_and_indexed_with_a_sidecar(tmp_path, lambda_source, lambda_sha256):
    output = tmp_path / "out" / "lambda.fa.gz"
    record = fetch_genome("lambda", str(lambda_source), output, sha256=lambda_sha256)
    assert _entries(output.parent) == ["lambda.fa.gz", "lambda.fa.gz.fai", "lambda.fa.gz.gzi", "lambda.source.json"]
    assert output.read_bytes()[:4] == b"\x1f\x8b\x08\x04"  # gzip with the BGZF extra field
    assert _stored_equals_original(output, lambda_source)
    sidecar = _sidecar(output, "lambda")
    assert sidecar == record
    assert sidecar["sha256"] == lambda_sha256
    assert sidecar["sha256_checked"] is True
    assert sidecar["fetched_from"] == str(lambda_source)
    assert (sidecar["contigs"], sidecar["length"]) == (1, LAMBDA_LENGTH)


def test_sha256_is_compared_case_insensitively(tmp_path, lambda_source, lambda_sha256):
    output = tmp_path / "out" / "lambda.fa.gz"
    record = fetch_genome("lambda", str(lambda_source), output, sha256=lambda_sha256.upper())
    assert record["sha256"] == lambda_sha256 and record["sha256_checked"] is True


def test_wrong_sha256_is_a_one_line_error_naming_genome_and_both_hashes_and_leaves_nothing(
    tmp_path, lambda_source, lambda_sha256
):
    output = tmp_path / "out" / "phage_lambda.fa.gz"
    with pytest.raises(VqdnaError) as caught:
        fetch_genome("phage_lambda", str(lambda_source), output, sha256=WRONG_SHA256)
    message = str(caught.value)
    assert "\n" not in message
    assert "phage_lambda" in message
    assert WRONG_SHA256 in message and lambda_sha256 in message
    assert _entries(output.parent) == []
    # a local source is the user's file: it is never deleted
    assert hashlib.sha256(lambda_source.read_bytes()).hexdigest() == lambda_sha256


def test_cli_wrong_sha256_exits_1_with_one_error_line_and_leaves_nothing(tmp_path, lambda_source, lambda_sha256):
    output = tmp_path / "out" / "phage_lambda.fa.gz"
    env = {k: v for k, v in os.environ.items() if k != "VQDNA_MIRROR"}
    result = subprocess.run(
        [sys.executable, "-m", "vqdna", "download", "--genome", "phage_lambda", "--source", str(lambda_source),
         "--sha256", WRONG_SHA256, "--output", str(output)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:")
    assert "phage_lambda" in lines[0] and WRONG_SHA256 in lines[0] and lambda_sha256 in lines[0]
    assert result.stdout == ""
    assert not output.parent.exists() or _entries(output.parent) == []


def test_cli_download_with_right_sha256_exits_0_and_writes_the_genome(tmp_path, lambda_source, lambda_sha256):
    output = tmp_path / "out" / "lambda.fa.gz"
    env = {k: v for k, v in os.environ.items() if k != "VQDNA_MIRROR"}
    result = subprocess.run(
        [sys.executable, "-m", "vqdna", "download", "--genome", "lambda", "--source", str(lambda_source),
         "--sha256", lambda_sha256, "--output", str(output)],
        capture_output=True, text=True, env=env, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert _stored_equals_original(output, lambda_source)
    assert _sidecar(output, "lambda")["sha256_checked"] is True


def test_http_download_records_the_sha256_when_none_is_given(tmp_path, http_server, lambda_source, lambda_sha256):
    url = f"{http_server.url}/lambda_virus.fa"
    output = tmp_path / "out" / "lambda.fa.gz"
    fetch_genome("lambda", url, output)
    assert len(http_server.requests) == 1
    assert _entries(output.parent) == ["lambda.fa.gz", "lambda.fa.gz.fai", "lambda.fa.gz.gzi", "lambda.source.json"]
    assert _stored_equals_original(output, lambda_source)
    sidecar = _sidecar(output, "lambda")
    assert sidecar["sha256"] == lambda_sha256
    assert sidecar["sha256_checked"] is False
    assert sidecar["source"] == url and sidecar["fetched_from"] == url


def test_http_download_with_wrong_sha256_is_deleted(tmp_path, http_server, lambda_sha256):
    output = tmp_path / "out" / "lambda.fa.gz"
    with pytest.raises(VqdnaError) as caught:
        fetch_genome("lambda", f"{http_server.url}/lambda_virus.fa", output, sha256=WRONG_SHA256)
    assert lambda_sha256 in str(caught.value)
    assert len(http_server.requests) == 1
    assert _entries(output.parent) == []


def test_http_404_is_a_one_line_error_and_leaves_nothing(tmp_path, http_server):
    url = f"{http_server.url}/no_such_genome.fa"
    output = tmp_path / "out" / "lambda.fa.gz"
    with pytest.raises(VqdnaError) as caught:
        fetch_genome("lambda", url, output)
    message = str(caught.value)
    assert "\n" not in message and url in message and "404" in message
    assert _entries(output.parent) == []


def test_a_request_that_fails_is_retried(tmp_path, http_server, lambda_source):
    http_server.failures.append(503)
    output = tmp_path / "out" / "lambda.fa.gz"
    fetch_genome("lambda", f"{http_server.url}/lambda_virus.fa", output)
    assert len(http_server.requests) == 2
    assert _stored_equals_original(output, lambda_source)
    assert _entries(output.parent) == ["lambda.fa.gz", "lambda.fa.gz.fai", "lambda.fa.gz.gzi", "lambda.source.json"]


def test_an_unreachable_server_is_a_one_line_error_that_points_to_the_mirror_and_leaves_nothing(tmp_path, no_proxy):
    with socket.socket() as probe:  # a port nothing listens on once the probe is closed
        probe.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{probe.getsockname()[1]}/lambda_virus.fa"
    output = tmp_path / "out" / "lambda.fa.gz"
    with pytest.raises(VqdnaError) as caught:
        fetch_genome("lambda", url, output)
    message = str(caught.value)
    assert "\n" not in message and url in message and "VQDNA_MIRROR" in message
    assert _entries(output.parent) == []


def test_mirror_file_of_the_same_name_is_used_before_the_url(tmp_path, http_server, lambda_source, lambda_sha256):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copyfile(lambda_source, mirror / "lambda_virus.fa")
    url = f"{http_server.url}/lambda_virus.fa"
    output = tmp_path / "out" / "lambda.fa.gz"
    fetch_genome("lambda", url, output, sha256=lambda_sha256, mirror=str(mirror))
    assert http_server.requests == []
    sidecar = _sidecar(output, "lambda")
    assert sidecar["fetched_from"] == str(mirror / "lambda_virus.fa")
    assert sidecar["source"] == url
    assert _stored_equals_original(output, lambda_source)
    assert (mirror / "lambda_virus.fa").is_file()


def test_vqdna_mirror_environment_variable_is_honoured_without_a_mirror_argument(
    tmp_path, http_server, lambda_source, monkeypatch
):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    shutil.copyfile(lambda_source, mirror / "lambda_virus.fa")
    monkeypatch.setenv("VQDNA_MIRROR", str(mirror))
    output = tmp_path / "out" / "lambda.fa.gz"
    fetch_genome("lambda", f"{http_server.url}/lambda_virus.fa", output)
    assert http_server.requests == []
    assert _sidecar(output, "lambda")["fetched_from"] == str(mirror / "lambda_virus.fa")


def test_mirror_without_the_file_falls_back_to_the_url(tmp_path, http_server, lambda_source):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "some_other_genome.fa").write_text(">x\nACGT\n")
    url = f"{http_server.url}/lambda_virus.fa"
    output = tmp_path / "out" / "lambda.fa.gz"
    fetch_genome("lambda", url, output, mirror=str(mirror))
    assert len(http_server.requests) == 1
    assert _sidecar(output, "lambda")["fetched_from"] == url


def test_mirror_copy_is_checked_against_the_sha256_and_kept(tmp_path, http_server, lambda_source, lambda_sha256):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    corrupt = mirror / "lambda_virus.fa"
    corrupt.write_bytes(lambda_source.read_bytes()[:-100])
    output = tmp_path / "out" / "lambda.fa.gz"
    with pytest.raises(VqdnaError) as caught:
        fetch_genome("lambda", f"{http_server.url}/lambda_virus.fa", output, sha256=lambda_sha256, mirror=str(mirror))
    assert str(corrupt) in str(caught.value) and lambda_sha256 in str(caught.value)
    assert http_server.requests == []
    assert _entries(output.parent) == []
    assert corrupt.is_file()


def test_missing_mirror_folder_is_an_error(tmp_path, lambda_source, monkeypatch):
    monkeypatch.setenv("VQDNA_MIRROR", str(tmp_path / "no_such_mirror"))
    with pytest.raises(VqdnaError, match="no_such_mirror"):
        fetch_genome("lambda", str(lambda_source), tmp_path / "out" / "lambda.fa.gz")


def test_missing_local_source_is_an_error_naming_genome_and_source(tmp_path):
    source = tmp_path / "nowhere.fa"
    output = tmp_path / "out" / "lambda.fa.gz"
    with pytest.raises(VqdnaError) as caught:
        fetch_genome("lambda", str(source), output)
    assert "lambda" in str(caught.value) and str(source) in str(caught.value)
    assert _entries(output.parent) == []


@pytest.mark.parametrize("suffix", [".txt", ".csv"])
def test_a_prepared_corpus_of_sequences_becomes_a_genome_of_one_record_per_sequence(tmp_path, suffix):
    sequences = ["ACGTNACGTA", "ggccaattgg", "TTTTRYAAAA"]
    if suffix == ".csv":
        text = "id,sequence\n" + "".join(f"s{i},{s}\n" for i, s in enumerate(sequences)) + "\n"
    else:
        text = "\n".join(sequences[:2]) + "\n\n" + sequences[2] + "\n"
    source = tmp_path / f"corpus{suffix}"
    source.write_text(text)
    record = fetch_genome("corpus", str(source), tmp_path / "out" / "corpus.fa.gz")
    assert record["contigs"] == 3 and record["length"] == 30
    with pysam.FastaFile(str(tmp_path / "out" / "corpus.fa.gz")) as fasta:
        assert [fasta.fetch(name) for name in fasta.references] == sequences
        assert fasta.references[2] == "line4"  # named by its line in the table, blank lines counted


def test_a_corpus_with_a_bad_character_names_its_line_and_leaves_nothing(tmp_path):
    source = tmp_path / "corpus.txt"
    source.write_text("ACGT\nAC-GT\n")
    with pytest.raises(VqdnaError, match=r"corpus\.txt line 2: character '-'"):
        fetch_genome("corpus", str(source), tmp_path / "out" / "corpus.fa.gz")
    assert not any((tmp_path / "out").glob("corpus*"))


def _sixty_mers(count: int) -> bytes:
    return b"".join(bytes(b"ACGT"[(i * 7 + j) % 4] for j in range(60)) + b"\n" for i in range(count))


def _corrupt_deflate() -> bytes:
    """A gzip whose header is sound and whose deflate stream is not: zlib.error, which is not an OSError."""
    import gzip

    data = bytearray(gzip.compress(b">chr1\n" + _sixty_mers(2000)))
    data[12:13] = b"\x07"  # inside the first deflate block's code lengths
    return bytes(data)


@pytest.mark.parametrize(
    "content,expected",
    [
        (b">chr1 caf\xe9\n" + _sixty_mers(3), r"line 1: FASTA header holds byte 0xe9, which is not UTF-8 text$"),
        (b">chr\xff1\n" + _sixty_mers(3), r"line 1: FASTA header holds byte 0xff, which is not UTF-8 text$"),
        (_corrupt_deflate(), r"genome\.fa\.gz: cannot be read as plain or gzip text \(Error -3 while decompressing data: [a-z ]+\)$"),
    ],
    ids=["latin-1-description", "latin-1-name", "corrupt-deflate"],
)
def test_an_unreadable_genome_is_one_line_through_the_download_command_and_leaves_nothing(tmp_path, content, expected):
    """What the download_genome rule runs: each was stored, then a traceback in make_windows, or a zlib traceback."""
    source = tmp_path / "genome.fa.gz"
    source.write_bytes(content)
    output = tmp_path / "resources" / "genomes" / "bad.fa.gz"
    result = subprocess.run(
        [sys.executable, "-m", "vqdna", "download", "--genome", "bad", "--source", str(source), "--output", str(output)],
        capture_output=True, text=True,
    )
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert re.search(expected, result.stderr.strip()), result.stderr
    assert list(output.parent.iterdir()) == []
