"""How the sheets name where data comes from: a URL, a local path, or ``archive:NAME/path/inside``.

The one parser of these names, used by the plan (at config time, in the
Snakemake process: so only the standard library here) and by the stages that
fetch, unpack and read the data.
"""

from __future__ import annotations

import urllib.parse
from pathlib import PurePosixPath

from vqdna import VqdnaError

ARCHIVE_PREFIX = "archive:"
# Sources under these schemes are fetched or unpacked by a rule: they are not files of this machine.
_NOT_LOCAL_SCHEMES = ("http", "https", "ftp", "archive")


_FETCHED_SCHEMES = ("http", "https", "ftp")


def check_scheme(source: str, where: str) -> None:
    """One line for a URL whose scheme no rule fetches (``file://``, ``s3://``, ...): it is not a local path either."""
    scheme = urllib.parse.urlparse(source).scheme
    if "://" in source and scheme not in _FETCHED_SCHEMES:
        raise VqdnaError(f"{where}: source {source}: unsupported scheme '{scheme}://' (use https, http, ftp or a local path)")


def is_local(source: str) -> bool:
    """A path on this machine, not a URL or an ``archive:`` source."""
    return urllib.parse.urlparse(source).scheme not in _NOT_LOCAL_SCHEMES


def is_archive_source(source: str) -> bool:
    return source.startswith(ARCHIVE_PREFIX)


def parse_archive_source(source: str) -> tuple[str, str]:
    """``archive:NAME/path/inside`` -> (``NAME``, ``path/inside``); the inside path may be empty."""
    if not is_archive_source(source):
        raise VqdnaError(f"source {source!r} is not of the form '{ARCHIVE_PREFIX}NAME/path/inside'")
    rest = source[len(ARCHIVE_PREFIX):].rstrip("/")
    parts = PurePosixPath(rest).parts
    if not rest or rest.startswith("/") or "\\" in rest or not parts or ".." in parts or parts[0] == ".":
        raise VqdnaError(
            f"source {source!r}: expected '{ARCHIVE_PREFIX}NAME/path/inside' with a relative path and no '..'"
        )
    return parts[0], "/".join(parts[1:])
