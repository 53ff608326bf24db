"""Fetch a genome (URL or local path, offline mirror first), verify it, store it bgzipped and indexed.

Order of work, so that nothing unverified is ever recompressed:
1. find the raw file: ``{mirror}/{file name}`` if present, else the URL (http,
   https, ftp) or local path of the genome sheet;
2. sha256 of the raw bytes, checked against the sheet (or recorded when the
   sheet gives none); a mismatch deletes the download and fails;
3. validate + re-wrap + bgzip (:mod:`vqdna.genome`), faidx, then move the
   ``.fa.gz``, ``.fai``, ``.gzi`` and ``.source.json`` into place.

Why not pooch, whose ``retrieve`` also downloads with retries, checks a sha256
and moves the file into place (checked against pooch 1.9.0): its model is a
cache keyed by file name, and ours is a pipeline step whose every input is
verified. Without ``known_hash`` pooch keeps a file already present instead of
downloading it; with one, it retries a download whose hash does not match, so
a wrong sheet hash would fetch a whole genome three times; the check must also
cover a mirror copy or a local file, which never pass through pooch; pooch
retries a 404 (a wrong URL is not transient: ours fails at once on any 4xx);
and its ``FTPDownloader`` takes ``host:port`` for a host name. What would be
left of pooch is a streamed GET with retries: :func:`download_file`, 20 lines
of the standard library, with no two more dependencies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

from vqdna import VqdnaError, __version__
from vqdna.artifacts import clear_leftovers
from vqdna.genome import (
    index_fasta,
    is_sequence_table,
    sequences_to_fasta,
    write_bgzip_fasta,
)

MIRROR_ENV = "VQDNA_MIRROR"
REMOTE_SCHEMES = ("http", "https", "ftp")
_CHUNK = 1 << 20


def is_remote(source: str) -> bool:
    return urllib.parse.urlparse(source).scheme in REMOTE_SCHEMES


def source_file_name(source: str) -> str:
    """The file name a mirror is searched for: the last path component of the URL or path."""
    path = urllib.parse.urlparse(source).path if is_remote(source) else source
    return Path(urllib.parse.unquote(path)).name


def resolve_mirror(mirror: str | None) -> Path | None:
    """``mirror`` argument, else ``$VQDNA_MIRROR``, else none. A named but missing folder is an error."""
    chosen = mirror or os.environ.get(MIRROR_ENV) or None
    if chosen is None:
        return None
    folder = Path(chosen).expanduser()
    if not folder.is_dir():
        raise VqdnaError(f"mirror directory {folder} does not exist (config key 'mirror' or ${MIRROR_ENV})")
    return folder


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def download_file(url: str, destination: Path, *, attempts: int = 3, timeout: float = 60.0) -> None:
    for attempt in range(1, attempts + 1):
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response, open(destination, "wb") as out:
                shutil.copyfileobj(response, out, _CHUNK)
            return
        except (urllib.error.URLError, OSError) as err:
            if isinstance(err, urllib.error.HTTPError) and 400 <= err.code < 500:
                err.close()
                raise VqdnaError(f"download of {url} failed: HTTP {err.code} {err.reason}") from None
            if attempt == attempts:
                raise VqdnaError(
                    f"download of {url} failed after {attempts} attempts ({err}); "
                    f"offline? put the file in a mirror directory (${MIRROR_ENV})"
                ) from None
            time.sleep(2**attempt)


def _verified_raw(what: str, source: str, expected: str | None, mirror_dir: Path | None, work: Path) -> tuple[Path, str, str]:
    """(raw file, where it came from, its sha256): the mirror by file name first, then the URL or path; sha256 checked."""
    name = source_file_name(source)
    mirrored = mirror_dir / name if mirror_dir is not None else None
    if mirrored is not None and mirrored.is_file():
        raw, origin = mirrored, str(mirrored)
    elif is_remote(source):
        raw, origin = work / name, source
        download_file(source, raw)
    else:
        raw, origin = Path(source).expanduser(), source
        if not raw.is_file():
            raise VqdnaError(f"{what}: source {source} is neither a URL nor an existing file")
    actual = sha256_of(raw)
    if expected is not None and actual != expected:
        fate = "the download was deleted" if raw.parent == work else "the file was left as it is"
        raise VqdnaError(
            f"{what}: sha256 mismatch for {origin} (expected {expected}, got {actual}); "
            f"{fate}: fix the sheet's sha256 or the source"
        )
    return raw, origin, actual


def fetch_file(what: str, source: str, output: str | Path, *, sha256: str | None = None, mirror: str | None = None) -> dict:
    """A small file kept as downloaded (an assembly report), verified like a genome; sidecar ``{output}.source.json``."""
    output = Path(output)
    expected = sha256.lower().strip() if sha256 else None
    output.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(output.parent, f".{output.name}.download-")  # a killed fetch's folder
    work = Path(tempfile.mkdtemp(prefix=f".{output.name}.download-", dir=output.parent))
    try:
        raw, origin, actual = _verified_raw(what, source, expected, resolve_mirror(mirror), work)
        record = {
            "source": source,
            "fetched_from": origin,
            "sha256": actual,
            "sha256_checked": expected is not None,
            "bytes": raw.stat().st_size,
            "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "producer": f"vqdna {__version__}",
        }
        shutil.copyfile(raw, work / "file")
        (work / "source.json").write_text(json.dumps(record, indent=2) + "\n")
        os.replace(work / "file", output)
        os.replace(work / "source.json", output.with_name(output.name + ".source.json"))
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)


def fetch_genome(
    genome: str,
    source: str,
    output: str | Path,
    *,
    sha256: str | None = None,
    mirror: str | None = None,
) -> dict:
    """Produce ``output`` (``{genome}.fa.gz``) with ``.fai``, ``.gzi`` and ``{genome}.source.json``.

    Returns the provenance record written to the sidecar.
    """
    output = Path(output)
    sidecar = output.with_name(f"{genome}.source.json")
    expected = sha256.lower().strip() if sha256 else None
    output.parent.mkdir(parents=True, exist_ok=True)
    clear_leftovers(output.parent, f".{genome}.download-")  # a killed download's folder, the size of a genome
    work = Path(tempfile.mkdtemp(prefix=f".{genome}.download-", dir=output.parent))
    try:
        raw, origin, actual = _verified_raw(f"genome {genome}", source, expected, resolve_mirror(mirror), work)
        fasta = work / output.name
        fasta_source = raw
        if is_sequence_table(raw.name):  # an already-prepared corpus of sequences, not a genome
            fasta_source = work / "sequences.fa"
            sequences_to_fasta(raw, fasta_source, label=origin)
        contigs = write_bgzip_fasta(fasta_source, fasta, label=origin)
        index_fasta(fasta)
        record = {
            "genome": genome,
            "source": source,
            "fetched_from": origin,
            "sha256": actual,
            "sha256_checked": expected is not None,
            "bytes": raw.stat().st_size,
            "contigs": len(contigs),
            "length": sum(c.length for c in contigs),
            "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "producer": f"vqdna {__version__}",
        }
        (work / sidecar.name).write_text(json.dumps(record, indent=2) + "\n")
        # The FASTA and its indexes first, the sidecar last.
        for suffix in (".fai", ".gzi"):
            os.replace(work / (output.name + suffix), output.with_name(output.name + suffix))
        os.replace(fasta, output)
        os.replace(work / sidecar.name, sidecar)
        return record
    finally:
        shutil.rmtree(work, ignore_errors=True)
