"""Benchmark archives (GUE's ``GUE.zip``): fetch once (offline mirror first), verify, unpack once.

- :func:`fetch_archive` stores the raw zip and a ``{archive}.source.json``
  sidecar. Sources: the offline mirror (by file name), an http/https/ftp URL,
  a Google Drive file link (the virus-scan warning page of a large file is
  answered like a browser would), or a local path. The raw bytes are checked
  against the sheet's sha256 (or it is recorded) and must start like a zip, so
  a web page served in place of the archive is never stored as one.
- :func:`unpack_archive` extracts it into a folder that appears only when
  complete, with ``UNPACKED.json`` written last.
- :func:`resolve_archive_source` maps a datasets-sheet source
  ``archive:NAME/path/inside`` to ``{archives_dir}/NAME/path/inside``.

Why not gdown and ``pooch.Unzip``, which do the Drive flow and unpacking
(checked against gdown 6.5.1 and pooch 1.9.0):

- gdown runs its confirmation flow only for drive.google.com and
  docs.google.com URLs, so it cannot be pointed at a local stand-in for tests
  (``drive_base``); it reads the warning page line by line, so a form whose
  hidden inputs sit on other lines is submitted without them; it submits a
  warning page served again after confirmation over and over with no limit;
  and it answers an HTTP 403 sign-in page with a multi-line error naming
  neither the status nor the page. Ours submits the form once, with every
  field, and stops with one line naming the status or the page's title and
  the file to put in the mirror.
- ``pooch.Unzip`` calls ``ZipFile.extractall`` straight into the final
  folder, which silently renames members with ``..`` or an absolute path and
  stops half-way on an encrypted or damaged member. Ours refuses ``..``,
  absolute and encrypted members before writing anything, and fills a hidden
  folder that is renamed into place only once complete.
"""

from __future__ import annotations

import json
import re
import shutil
import zipfile
import zlib
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path, PurePosixPath, PureWindowsPath
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

from vqdna import VqdnaError, __version__
from vqdna.artifacts import atomic_dir, atomic_path
from vqdna.download import (
    MIRROR_ENV,
    download_file,
    is_remote,
    resolve_mirror,
    sha256_of,
    source_file_name,
)
from vqdna.sources import parse_archive_source

ZIP_MAGIC = b"PK\x03\x04"
UNPACKED_MARKER = "UNPACKED.json"
_ENCRYPTED = 0x1  # general-purpose flag bit 0 of a zip member: zipfile cannot read it without the password
# Where Drive file requests go; tests point this at a local server.
DRIVE_BASE = "https://drive.google.com"
DRIVE_HOSTS = ("drive.google.com", "docs.google.com", "drive.usercontent.google.com")
DOWNLOAD_FORM_ID = "download-form"

_DRIVE_ID = re.compile(r"[A-Za-z0-9_-]{10,}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_PAGE_BYTES = 1 << 20  # Drive's warning page is a few kB; never parse more than this


def sidecar_path(output: str | Path) -> Path:
    """``{output}.source.json``: provenance of a fetched archive."""
    output = Path(output)
    return output.with_name(output.name + ".source.json")


def drive_file_id(url: str) -> str | None:
    """The file id of a Google Drive file link, or None when ``url`` is not on a Drive host.

    Accepted shapes: ``/file/d/ID/view...``, ``/uc?id=ID...``, ``/open?id=ID``
    (and ``drive.usercontent.google.com/download?id=ID``). A Drive link of any
    other shape (a folder, a sign-in page) is an error.
    """
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or (parts.hostname or "").lower() not in DRIVE_HOSTS:
        return None
    segments = [s for s in parts.path.split("/") if s]
    if len(segments) >= 3 and segments[0] == "file" and segments[1] == "d":
        candidate = segments[2]
    else:
        candidate = (parse_qs(parts.query).get("id") or [""])[0]
    if not _DRIVE_ID.fullmatch(candidate):
        raise VqdnaError(
            f"{url}: not a Google Drive file link (expected .../file/d/ID/view, .../uc?id=ID or .../open?id=ID)"
        )
    return candidate


def _is_zip(path: Path) -> bool:
    with open(path, "rb") as handle:
        return handle.read(len(ZIP_MAGIC)) == ZIP_MAGIC


def _looks_like_html(head: bytes) -> bool:
    start = head.lstrip(b"\xef\xbb\xbf \t\r\n").lower()
    return start.startswith((b"<!doctype html", b"<html")) or b"<html" in start[:2048]


def _head(path: Path, size: int) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(size)


class _DrivePage(HTMLParser):
    """The page's title and the action + submitted fields of ``<form id="download-form">``."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title = ""
        self.action: str | None = None
        self.fields: dict[str, str] = {}
        self._in_form = False
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = {key: value or "" for key, value in attrs}
        if tag == "form" and attributes.get("id") == DOWNLOAD_FORM_ID and self.action is None:
            self._in_form = True
            self.action = attributes.get("action", "")
        elif tag == "input" and self._in_form and attributes.get("name"):
            # A browser submits a button's name only when that button is the one clicked.
            if attributes.get("type", "text").lower() not in ("submit", "button", "image", "reset"):
                self.fields[attributes["name"]] = attributes.get("value", "")
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag == "form":
            self._in_form = False
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data


def _parse_drive_page(path: Path) -> _DrivePage:
    page = _DrivePage()
    page.feed(_head(path, _PAGE_BYTES).decode("utf-8", errors="replace"))
    page.close()
    page.title = " ".join(page.title.split())[:120]
    return page


def _with_query(url: str, fields: dict[str, str]) -> str:
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, urlencode(fields)) if q)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, query, ""))


def _by_hand(source: str, mirror_dir: Path | None, mirror_name: str) -> str:
    place = f"as {mirror_dir / mirror_name}" if mirror_dir is not None else f"as {mirror_name} in a mirror folder"
    return f"download {source} by hand in a browser and save it {place} (config key 'mirror' or ${MIRROR_ENV}), then rerun"


def _download_from_drive(source: str, file_id: str, destination: Path, *, drive_base: str, hint: str) -> str:
    """Download a Drive file into ``destination``; returns the URL whose answer was the file."""
    url = f"{drive_base.rstrip('/')}/uc?" + urlencode({"export": "download", "id": file_id})
    try:
        download_file(url, destination)
    except VqdnaError as err:
        raise VqdnaError(f"{err}; {hint}") from None
    if _is_zip(destination) or not _looks_like_html(_head(destination, 4096)):
        return url  # a small file comes straight away; anything else is judged by the caller

    # Files too large for Drive's virus scan answer a warning page whose form, submitted, serves the file.
    page = _parse_drive_page(destination)
    if page.action is None:
        raise VqdnaError(
            f"{source}: Google Drive answered a web page ({page.title or 'untitled'}) with no download form "
            f"instead of the archive (download quota exceeded, file not shared publicly, or sign-in required); {hint}"
        )
    confirmed = _with_query(urljoin(url, page.action), page.fields)
    if urlsplit(confirmed).scheme not in ("http", "https"):
        raise VqdnaError(f"{source}: Google Drive's download form points to {confirmed}, not an http(s) URL; {hint}")
    try:
        download_file(confirmed, destination)
    except VqdnaError as err:
        raise VqdnaError(f"{err}; {hint}") from None
    if _looks_like_html(_head(destination, 4096)) and not _is_zip(destination):
        title = _parse_drive_page(destination).title or "untitled"
        raise VqdnaError(
            f"{source}: Google Drive answered a web page ({title}) again after the virus-scan confirmation "
            f"instead of the archive; {hint}"
        )
    return confirmed


def fetch_archive(
    source: str,
    output: str | Path,
    *,
    sha256: str | None = "",
    mirror: str | None = None,
    drive_base: str = DRIVE_BASE,
) -> dict:
    """Store the zip archive ``source`` as ``output`` with ``{output}.source.json``; returns the sidecar record.

    The mirror (``mirror`` or ``$VQDNA_MIRROR``) is searched first for the
    URL's file name, or for ``output``'s name when ``source`` is a Drive link
    (which carries no file name). The archive is downloaded to a hidden temp
    file beside ``output`` and renamed into place only once its sha256 and zip
    signature are checked; the sidecar follows it.
    """
    output = Path(output)
    sidecar = sidecar_path(output)
    expected = (sha256 or "").strip().lower()
    if expected and not _HEX64.fullmatch(expected):
        raise VqdnaError(f"archive {source}: sha256 {sha256!r} is not 64 hexadecimal digits")
    file_id = drive_file_id(source)
    mirror_name = output.name if file_id is not None else source_file_name(source)
    mirror_dir = resolve_mirror(mirror)
    hint = _by_hand(source, mirror_dir, mirror_name)

    with atomic_path(output) as raw:
        mirrored = mirror_dir / mirror_name if mirror_dir is not None else None
        downloaded = False
        if mirrored is not None and mirrored.is_file():
            origin = str(mirrored)
            shutil.copyfile(mirrored, raw)
        elif file_id is not None:
            origin = _download_from_drive(source, file_id, raw, drive_base=drive_base, hint=hint)
            downloaded = True
        elif is_remote(source):
            origin = source
            download_file(source, raw)
            downloaded = True
        else:
            local = Path(source).expanduser()
            if not local.is_file():
                raise VqdnaError(f"archive {source}: neither a URL nor an existing file")
            origin = str(local)
            shutil.copyfile(local, raw)

        fate = "the download was deleted" if downloaded else "the file was left as it is"
        where = source if origin == source else f"{source} (from {origin})"
        if not _is_zip(raw):
            what = "a web page" if _looks_like_html(_head(raw, 4096)) else f"data starting {_head(raw, 8)!r}"
            raise VqdnaError(f"archive {where}: expected a zip archive, found {what}; {fate}; {hint}")
        actual = sha256_of(raw)
        if expected and actual != expected:
            raise VqdnaError(
                f"archive {where}: sha256 mismatch (expected {expected}, found {actual}); "
                f"{fate}: fix the sheet's sha256 or the source"
            )
        record = {
            "url": source,
            "fetched_from": origin,
            "sha256": actual,
            "sha256_checked": bool(expected),
            "bytes": raw.stat().st_size,
            "fetched_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "producer": f"vqdna {__version__}",
        }
        # A sidecar left from an earlier fetch must not vouch for the new archive, even for a moment.
        sidecar.unlink(missing_ok=True)
    with atomic_path(sidecar) as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return record


def _member_path(name: str) -> PureWindowsPath | None:
    """The member's relative path (``/`` and ``\\`` both separate), or None when it would escape."""
    path = PureWindowsPath(name)
    if path.drive or path.root or PurePosixPath(name).is_absolute() or ".." in path.parts:
        return None
    return path


def unpack_archive(archive: str | Path, output_dir: str | Path) -> dict:
    """Extract the zip ``archive`` into ``output_dir``; returns the record written to ``UNPACKED.json``.

    Every member is checked before anything is written; ``output_dir`` appears
    only once all members and ``UNPACKED.json`` (written last) are in place.
    """
    archive, output_dir = Path(archive), Path(output_dir)
    if not archive.is_file():
        raise VqdnaError(f"archive {archive} not found; fetch it first")
    try:
        bundle = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as err:
        raise VqdnaError(f"archive {archive}: not a readable zip file ({err}); delete it and fetch it again") from None
    with bundle:
        members = bundle.infolist()
        for info in members:
            path = _member_path(info.filename)
            if path is None:
                raise VqdnaError(
                    f"archive {archive}: member {info.filename!r} has an absolute path or '..'; refusing to unpack it"
                )
            if path.parts == (UNPACKED_MARKER,):
                raise VqdnaError(f"archive {archive}: member {info.filename!r} would clash with the {UNPACKED_MARKER} marker")
            if info.flag_bits & _ENCRYPTED:
                raise VqdnaError(f"archive {archive}: member {info.filename!r} is encrypted; unpack it yourself with its password")

        files, size = 0, 0
        try:
            with atomic_dir(output_dir) as tmp:
                for info in members:
                    target = tmp.joinpath(*_member_path(info.filename).parts)
                    if info.is_dir():
                        target.mkdir(parents=True, exist_ok=True)
                        continue
                    target.parent.mkdir(parents=True, exist_ok=True)
                    with bundle.open(info) as src, open(target, "wb") as dst:
                        shutil.copyfileobj(src, dst, 1 << 20)
                    files += 1
                    size += info.file_size
                record = {
                    "archive": str(archive),
                    "archive_sha256": sha256_of(archive),
                    "members": files,
                    "bytes": size,
                    "unpacked_at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                    "producer": f"vqdna {__version__}",
                }
                (tmp / UNPACKED_MARKER).write_text(json.dumps(record, indent=2) + "\n")
        except (zipfile.BadZipFile, zlib.error, EOFError, NotImplementedError) as err:  # NotImplementedError: compression method
            raise VqdnaError(
                f"archive {archive}: corrupt or unsupported zip ({err}); nothing was unpacked; delete it and fetch it again"
            ) from None
        except OSError as err:
            raise VqdnaError(f"archive {archive}: unpacking into {output_dir} failed ({err}); nothing was unpacked") from None
    return record


def resolve_archive_source(source: str, archives_dir: str | Path) -> Path:
    """The folder ``{archives_dir}/NAME/path/inside`` named by ``archive:NAME/path/inside``; it must exist."""
    name, inside = parse_archive_source(source)
    root = Path(archives_dir) / name
    folder = root / inside if inside else root
    if folder.is_dir():
        return folder
    if not (root / UNPACKED_MARKER).is_file():
        raise VqdnaError(
            f"source {source}: dataset folder {folder} does not exist because archive '{name}' is not "
            f"unpacked into {root}; unpack archive '{name}' first"
        )
    raise VqdnaError(
        f"source {source}: dataset folder {folder} does not exist in the unpacked archive '{name}' ({root}); "
        f"fix the path after '{name}/'"
    )
