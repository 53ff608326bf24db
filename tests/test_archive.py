"""Benchmark archives: Drive's virus-scan warning flow, sha256 checks, the mirror, safe unpacking, archive: sources."""

from __future__ import annotations

import hashlib
import http.server
import io
import json
import threading
import urllib.parse
import zipfile
from pathlib import Path
from types import SimpleNamespace

import pytest

from vqdna import VqdnaError
from vqdna.archive import (
    UNPACKED_MARKER,
    drive_file_id,
    fetch_archive,
    resolve_archive_source,
    sidecar_path,
    unpack_archive,
)
from vqdna.sources import parse_archive_source

DRIVE_ID = "1uOrVw9y9ZkrhbEGF0oTa6mJxdKCJZtCq"
DRIVE_LINKS = [
    f"https://drive.google.com/file/d/{DRIVE_ID}/view?usp=sharing",
    f"https://drive.google.com/uc?id={DRIVE_ID}&export=download",
    f"https://drive.google.com/open?id={DRIVE_ID}",
]
CONFIRM_UUID = "7c3f0a9e-1b2d-4e5f-8a6b-9c0d1e2f3a4b"
WRONG_SHA256 = "0" * 64
PROXY_VARIABLES = ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY")

# GUE's layout: one folder per dataset holding train/dev/test CSVs.
GUE_DATASETS = ["GUE/EMP/H3", "GUE/mouse/0", "GUE/prom/prom_core_notata", "GUE/virus/covid"]


def gue_zip() -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_DEFLATED) as bundle:
        bundle.writestr("GUE/", "")
        for folder in GUE_DATASETS:
            bundle.writestr(f"{folder}/", "")
            for split, rows in (("train", 6), ("dev", 2), ("test", 2)):
                lines = ["sequence,label"] + [f"{'ACGT' * (i + 1)},{i % 2}" for i in range(rows)]
                bundle.writestr(f"{folder}/{split}.csv", "\n".join(lines) + "\n")
    return buffer.getvalue()


GUE_ZIP = gue_zip()
GUE_SHA256 = hashlib.sha256(GUE_ZIP).hexdigest()


def warning_page(action: str) -> bytes:
    """Drive's answer for a file too large to scan: a page whose form, submitted, serves the file."""
    return f"""<!DOCTYPE html><html><head><title>Google Drive - Virus scan warning</title>
<meta http-equiv="content-type" content="text/html; charset=utf-8"/></head><body>
<form id="gb-search" action="/search"><input name="q" value="nothing"></form>
<div class="uc-main"><div id="uc-text"><p class="uc-warning-caption">Google Drive can&#39;t scan this file for viruses.</p>
<p class="uc-warning-subcaption"><span class="uc-name-size"><a href="/open?id={DRIVE_ID}">GUE.zip</a> (486M)</span>
is too large for Google to scan for viruses. Would you still like to download this file?</p>
<form id="download-form" action="{action}" method="get">
<input type="submit" id="uc-download-link" class="jfk-button jfk-button-action" value="Download anyway"/>
<input type="hidden" name="id" value="{DRIVE_ID}"><input type="hidden" name="export" value="download">
<input type="hidden" name="confirm" value="t"><input type="hidden" name="uuid" value="{CONFIRM_UUID}">
</form></div></div></body></html>""".encode()


QUOTA_PAGE = b"""<!DOCTYPE html><html><head><title>Google Drive - Quota exceeded</title></head><body>
<p>Sorry, you can't view or download this file at this time.</p>
<p>Too many users have viewed or downloaded this file recently.</p></body></html>"""

LOGIN_PAGE = b"""<!doctype html><html lang="en"><head><title>Sign in - Google Accounts</title></head>
<body><form id="login" action="/signin"><input name="identifier"></form></body></html>"""


@pytest.fixture
def server(monkeypatch):
    """A local stand-in for Drive and a plain file host; ``mode`` picks Drive's answer, ``requests`` logs paths.

    Drive modes: ``warning`` (the virus-scan form; the file only for the right confirm + uuid),
    ``stale`` (a form whose uuid the download endpoint no longer accepts),
    ``quota`` (a page with no form), ``direct`` (the file at once), ``forbidden`` (HTTP 403).
    """
    for variable in PROXY_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")
    state = SimpleNamespace(mode="warning", requests=[], base="")

    class DriveHandler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            state.requests.append(self.path)
            url = urllib.parse.urlsplit(self.path)
            query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
            if url.path == "/uc" and query.get("id") == DRIVE_ID and query.get("export") == "download":
                if state.mode == "warning":
                    self._send(200, "text/html; charset=utf-8", warning_page(f"{state.base}/download"))
                elif state.mode == "stale":
                    page = warning_page(f"{state.base}/download").replace(CONFIRM_UUID.encode(), b"expired")
                    self._send(200, "text/html; charset=utf-8", page)
                elif state.mode == "quota":
                    self._send(200, "text/html; charset=utf-8", QUOTA_PAGE)
                elif state.mode == "direct":
                    self._send(200, "application/zip", GUE_ZIP)
                else:
                    self._send(403, "text/html; charset=utf-8", LOGIN_PAGE)
            elif url.path == "/download" and query.get("id") == DRIVE_ID:
                confirmed = query.get("confirm") == "t" and query.get("uuid") == CONFIRM_UUID
                # Without the form's values Drive only shows its warning again.
                body = GUE_ZIP if confirmed else warning_page(f"{state.base}/download")
                self._send(200, "application/octet-stream" if confirmed else "text/html", body)
            elif url.path == "/files/GUE.zip":
                self._send(200, "application/zip", GUE_ZIP)
            elif url.path == "/files/login.zip":
                self._send(200, "text/html", LOGIN_PAGE)
            else:
                self._send(404, "text/plain", b"not found")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), DriveHandler)
    state.base = f"http://127.0.0.1:{httpd.server_port}"
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def _entries(folder: Path) -> list[str]:
    """Everything in ``folder``, hidden temp files and folders included."""
    return sorted(p.name for p in folder.iterdir()) if folder.exists() else []


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message
    return message


# --- Drive links -------------------------------------------------------------------------------


@pytest.mark.parametrize("link", DRIVE_LINKS)
def test_drive_link_of_a_large_file_submits_the_virus_scan_form_and_stores_the_zip_with_a_sidecar(tmp_path, server, link):
    output = tmp_path / "archives" / "gue.zip"
    record = fetch_archive(link, output, drive_base=server.base)
    assert output.read_bytes() == GUE_ZIP
    assert _entries(output.parent) == ["gue.zip", "gue.zip.source.json"]
    assert json.loads(sidecar_path(output).read_text()) == record
    assert record["url"] == link
    assert (record["sha256"], record["sha256_checked"], record["bytes"]) == (GUE_SHA256, False, len(GUE_ZIP))
    assert set(record) >= {"fetched_at", "producer"}
    # the page first, then the form's action with every hidden input passed back
    assert len(server.requests) == 2
    first, second = (urllib.parse.urlsplit(r) for r in server.requests)
    assert first.path == "/uc" and urllib.parse.parse_qs(first.query) == {"export": ["download"], "id": [DRIVE_ID]}
    assert second.path == "/download"
    assert urllib.parse.parse_qs(second.query) == {
        "id": [DRIVE_ID], "export": ["download"], "confirm": ["t"], "uuid": [CONFIRM_UUID]
    }
    assert record["fetched_from"] == server.base + server.requests[1]


def test_drive_link_of_a_small_file_is_stored_from_the_first_answer(tmp_path, server):
    server.mode = "direct"
    output = tmp_path / "archives" / "gue.zip"
    record = fetch_archive(DRIVE_LINKS[0], output, drive_base=server.base)
    assert output.read_bytes() == GUE_ZIP
    assert len(server.requests) == 1 and record["fetched_from"] == f"{server.base}{server.requests[0]}"


def test_drive_page_without_a_download_form_is_a_one_line_error_that_says_what_to_do_and_leaves_nothing(tmp_path, server):
    server.mode = "quota"
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    output = tmp_path / "archives" / "gue.zip"
    with pytest.raises(VqdnaError) as caught:
        fetch_archive(DRIVE_LINKS[0], output, mirror=str(mirror), drive_base=server.base)
    message = _one_line(caught)
    assert DRIVE_LINKS[0] in message and "Quota exceeded" in message
    assert "by hand" in message and str(mirror / "gue.zip") in message
    assert len(server.requests) == 1
    assert _entries(output.parent) == []


def test_drive_warning_page_served_again_after_the_form_is_an_error_and_leaves_nothing(tmp_path, server):
    server.mode = "stale"
    output = tmp_path / "archives" / "gue.zip"
    with pytest.raises(VqdnaError) as caught:
        fetch_archive(DRIVE_LINKS[0], output, drive_base=server.base)
    message = _one_line(caught)
    assert "again after the virus-scan confirmation" in message and "Virus scan warning" in message
    assert len(server.requests) == 2
    assert _entries(output.parent) == []


def test_drive_refusal_without_a_mirror_names_the_file_to_put_in_one(tmp_path, server):
    server.mode = "forbidden"
    output = tmp_path / "archives" / "gue.zip"
    with pytest.raises(VqdnaError) as caught:
        fetch_archive(DRIVE_LINKS[2], output, drive_base=server.base)
    message = _one_line(caught)
    assert "403" in message and "gue.zip" in message and "VQDNA_MIRROR" in message
    assert _entries(output.parent) == []


def test_drive_links_of_other_shapes_are_errors_and_other_hosts_are_not_drive():
    assert drive_file_id("https://example.org/files/GUE.zip") is None
    with pytest.raises(VqdnaError, match="not a Google Drive file link"):
        drive_file_id("https://drive.google.com/drive/folders")


def test_a_web_page_served_for_a_plain_url_is_never_saved_as_the_archive(tmp_path, server):
    url = f"{server.base}/files/login.zip"
    output = tmp_path / "archives" / "gue.zip"
    with pytest.raises(VqdnaError) as caught:
        fetch_archive(url, output)
    message = _one_line(caught)
    assert url in message and "web page" in message and "deleted" in message
    assert _entries(output.parent) == []


# --- sha256 and the mirror ---------------------------------------------------------------------


def test_sha256_is_recorded_on_first_fetch_and_a_second_fetch_with_it_passes(tmp_path, server):
    url = f"{server.base}/files/GUE.zip"
    output = tmp_path / "archives" / "GUE.zip"
    first = fetch_archive(url, output)
    assert first["sha256"] == GUE_SHA256 and first["sha256_checked"] is False
    second = fetch_archive(url, output, sha256=first["sha256"].upper())
    assert second["sha256"] == GUE_SHA256 and second["sha256_checked"] is True
    assert json.loads(sidecar_path(output).read_text())["sha256_checked"] is True
    assert _entries(output.parent) == ["GUE.zip", "GUE.zip.source.json"]


def test_wrong_sha256_is_a_one_line_error_naming_url_and_both_hashes_and_leaves_nothing(tmp_path, server):
    url = f"{server.base}/files/GUE.zip"
    output = tmp_path / "archives" / "GUE.zip"
    with pytest.raises(VqdnaError) as caught:
        fetch_archive(url, output, sha256=WRONG_SHA256)
    message = _one_line(caught)
    assert url in message and WRONG_SHA256 in message and GUE_SHA256 in message
    assert _entries(output.parent) == []


def test_wrong_sha256_on_a_drive_link_leaves_nothing(tmp_path, server):
    output = tmp_path / "archives" / "gue.zip"
    with pytest.raises(VqdnaError) as caught:
        fetch_archive(DRIVE_LINKS[0], output, sha256=WRONG_SHA256, drive_base=server.base)
    assert DRIVE_LINKS[0] in _one_line(caught) and GUE_SHA256 in str(caught.value)
    assert _entries(output.parent) == []


def test_a_refetch_that_fails_keeps_the_earlier_archive_and_sidecar_intact(tmp_path, server):
    url = f"{server.base}/files/GUE.zip"
    output = tmp_path / "archives" / "GUE.zip"
    fetch_archive(url, output)
    with pytest.raises(VqdnaError):
        fetch_archive(url, output, sha256=WRONG_SHA256)
    assert output.read_bytes() == GUE_ZIP
    assert json.loads(sidecar_path(output).read_text())["sha256"] == GUE_SHA256
    assert _entries(output.parent) == ["GUE.zip", "GUE.zip.source.json"]


@pytest.mark.parametrize("via", ["argument", "environment"])
def test_mirror_file_of_the_url_name_is_used_before_the_network(tmp_path, server, monkeypatch, via):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "GUE.zip").write_bytes(GUE_ZIP)
    if via == "environment":
        monkeypatch.setenv("VQDNA_MIRROR", str(mirror))
    output = tmp_path / "archives" / "gue.zip"
    record = fetch_archive(
        f"{server.base}/files/GUE.zip", output, sha256=GUE_SHA256, mirror=str(mirror) if via == "argument" else None
    )
    assert server.requests == []
    assert record["fetched_from"] == str(mirror / "GUE.zip") and record["sha256_checked"] is True
    assert output.read_bytes() == GUE_ZIP
    assert (mirror / "GUE.zip").read_bytes() == GUE_ZIP


def test_mirror_file_of_the_output_name_stands_in_for_a_drive_link(tmp_path, server):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "gue.zip").write_bytes(GUE_ZIP)
    output = tmp_path / "archives" / "gue.zip"
    record = fetch_archive(DRIVE_LINKS[0], output, mirror=str(mirror), drive_base=server.base)
    assert server.requests == []
    assert record["fetched_from"] == str(mirror / "gue.zip")


def test_a_web_page_saved_in_the_mirror_is_refused_and_kept(tmp_path, server):
    mirror = tmp_path / "mirror"
    mirror.mkdir()
    (mirror / "GUE.zip").write_bytes(QUOTA_PAGE)
    output = tmp_path / "archives" / "GUE.zip"
    with pytest.raises(VqdnaError) as caught:
        fetch_archive(f"{server.base}/files/GUE.zip", output, mirror=str(mirror))
    assert str(mirror / "GUE.zip") in _one_line(caught) and "web page" in str(caught.value)
    assert server.requests == []
    assert _entries(output.parent) == []
    assert (mirror / "GUE.zip").read_bytes() == QUOTA_PAGE


def test_local_path_source_is_copied_and_a_missing_one_is_an_error(tmp_path):
    local = tmp_path / "GUE.zip"
    local.write_bytes(GUE_ZIP)
    output = tmp_path / "archives" / "gue.zip"
    assert fetch_archive(str(local), output, sha256=GUE_SHA256)["fetched_from"] == str(local)
    assert output.read_bytes() == GUE_ZIP and local.is_file()
    with pytest.raises(VqdnaError, match="nowhere.zip"):
        fetch_archive(str(tmp_path / "nowhere.zip"), tmp_path / "other" / "gue.zip")
    assert _entries(tmp_path / "other") == []


def test_malformed_sha256_is_refused_before_any_download(tmp_path, server):
    with pytest.raises(VqdnaError, match="64 hexadecimal"):
        fetch_archive(f"{server.base}/files/GUE.zip", tmp_path / "GUE.zip", sha256="abc123")
    assert server.requests == []


# --- unpacking ---------------------------------------------------------------------------------


def test_unpack_puts_every_member_in_place_and_writes_the_marker(tmp_path):
    archive = tmp_path / "gue.zip"
    archive.write_bytes(GUE_ZIP)
    output_dir = tmp_path / "archives" / "gue"
    record = unpack_archive(archive, output_dir)
    with zipfile.ZipFile(io.BytesIO(GUE_ZIP)) as bundle:
        files = [i for i in bundle.infolist() if not i.is_dir()]
        for info in files:
            assert (output_dir / info.filename).read_bytes() == bundle.read(info)
    for folder in GUE_DATASETS:
        assert sorted(p.name for p in (output_dir / folder).iterdir()) == ["dev.csv", "test.csv", "train.csv"]
    marker = json.loads((output_dir / UNPACKED_MARKER).read_text())
    assert marker == record
    assert marker["archive_sha256"] == GUE_SHA256
    assert (marker["members"], marker["bytes"]) == (len(files), sum(i.file_size for i in files))
    assert _entries(output_dir.parent) == ["gue"]


def _zip_with(name: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        bundle.writestr("GUE/EMP/H3/train.csv", "sequence,label\nACGT,0\n")
        bundle.writestr(name, "escaped\n")
    return buffer.getvalue()


@pytest.mark.parametrize(
    "name", ["../evil.csv", "GUE/../../evil.csv", "/tmp/evil.csv", "GUE\\..\\..\\evil.csv", "C:/evil.csv"]
)
def test_members_with_absolute_paths_or_dotdot_are_refused_and_nothing_is_unpacked(tmp_path, name):
    archive = tmp_path / "bad.zip"
    archive.write_bytes(_zip_with(name))
    work = tmp_path / "work"
    output_dir = work / "archives" / "gue"
    with pytest.raises(VqdnaError) as caught:
        unpack_archive(archive, output_dir)
    message = _one_line(caught)
    assert str(archive) in message and repr(name) in message
    assert not output_dir.exists() and _entries(output_dir.parent) == []
    assert not any(p.name == "evil.csv" for p in tmp_path.rglob("*"))


def test_a_file_that_is_not_a_zip_is_refused_and_nothing_is_unpacked(tmp_path):
    archive = tmp_path / "gue.zip"
    archive.write_bytes(GUE_ZIP[: len(GUE_ZIP) // 2])  # cut short: the central directory is gone
    output_dir = tmp_path / "archives" / "gue"
    with pytest.raises(VqdnaError) as caught:
        unpack_archive(archive, output_dir)
    assert str(archive) in _one_line(caught)
    assert _entries(output_dir.parent) == []


def _zip_with_header_field(tmp_path, local_at: int, central_at: int, value: int) -> Path:
    """A one-member zip whose 2-byte field at these offsets of its local and central headers is ``value``."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:
        bundle.writestr("GUE/EMP/H3/train.csv", "sequence,label\n" + "ACGTACGT,1\n" * 50)
    data = bytearray(buffer.getvalue())
    for header, at in ((b"PK\x03\x04", local_at), (b"PK\x01\x02", central_at)):
        where = data.index(header) + at
        data[where : where + 2] = value.to_bytes(2, "little")
    archive = tmp_path / "gue.zip"
    archive.write_bytes(bytes(data))
    return archive


def test_an_encrypted_member_is_refused_by_name_and_nothing_is_unpacked(tmp_path):
    archive = _zip_with_header_field(tmp_path, 6, 8, 0x1)  # flag bit 0: encrypted, zipfile would ask for a password
    output_dir = tmp_path / "archives" / "gue"
    with pytest.raises(VqdnaError) as caught:
        unpack_archive(archive, output_dir)
    assert "GUE/EMP/H3/train.csv" in _one_line(caught) and "encrypted" in str(caught.value)
    assert _entries(output_dir.parent) == []


def test_a_member_of_an_unknown_compression_method_is_refused_and_nothing_is_unpacked(tmp_path):
    archive = _zip_with_header_field(tmp_path, 8, 10, 99)  # compression method 99
    output_dir = tmp_path / "archives" / "gue"
    with pytest.raises(VqdnaError) as caught:
        unpack_archive(archive, output_dir)
    assert str(archive) in _one_line(caught) and "unsupported" in str(caught.value)
    assert _entries(output_dir.parent) == []


def test_a_member_with_damaged_data_is_refused_and_nothing_is_unpacked(tmp_path):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as bundle:
        bundle.writestr("GUE/EMP/H3/train.csv", "sequence,label\n" + "ACGTACGT,1\n" * 50)
        bundle.writestr("GUE/EMP/H3/test.csv", "sequence,label\n" + "TTTTGGGG,0\n" * 50)
    data = bytearray(buffer.getvalue())
    where = data.index(b"TTTTGGGG")
    data[where : where + 4] = b"AAAA"  # the stored CRC no longer matches
    archive = tmp_path / "gue.zip"
    archive.write_bytes(bytes(data))
    output_dir = tmp_path / "archives" / "gue"
    with pytest.raises(VqdnaError) as caught:
        unpack_archive(archive, output_dir)
    assert str(archive) in _one_line(caught) and "corrupt" in str(caught.value)
    assert _entries(output_dir.parent) == []


# --- archive: sources --------------------------------------------------------------------------


def test_archive_source_resolves_to_the_folder_inside_the_unpacked_archive(tmp_path):
    archive = tmp_path / "gue.zip"
    archive.write_bytes(GUE_ZIP)
    unpack_archive(archive, tmp_path / "archives" / "gue")
    folder = resolve_archive_source("archive:gue/GUE/EMP/H3", tmp_path / "archives")
    assert folder == tmp_path / "archives" / "gue" / "GUE" / "EMP" / "H3"
    assert (folder / "train.csv").is_file()
    assert resolve_archive_source("archive:gue/GUE/prom/prom_core_notata/", tmp_path / "archives").is_dir()
    assert parse_archive_source("archive:gue/GUE/EMP/H3") == ("gue", "GUE/EMP/H3")


def test_archive_source_of_an_archive_not_yet_unpacked_names_the_folder_and_the_archive(tmp_path):
    with pytest.raises(VqdnaError) as caught:
        resolve_archive_source("archive:gue/GUE/EMP/H3", tmp_path / "archives")
    message = _one_line(caught)
    assert str(tmp_path / "archives" / "gue" / "GUE" / "EMP" / "H3") in message
    assert "unpack archive 'gue'" in message


def test_archive_source_missing_from_an_unpacked_archive_names_the_folder(tmp_path):
    archive = tmp_path / "gue.zip"
    archive.write_bytes(GUE_ZIP)
    unpack_archive(archive, tmp_path / "archives" / "gue")
    with pytest.raises(VqdnaError) as caught:
        resolve_archive_source("archive:gue/GUE/EMP/H4", tmp_path / "archives")
    message = _one_line(caught)
    assert str(tmp_path / "archives" / "gue" / "GUE" / "EMP" / "H4") in message and "unpacked archive 'gue'" in message


@pytest.mark.parametrize("source", ["archive:", "archive:/gue/GUE", "archive:gue/../other", "gue/GUE/EMP/H3"])
def test_malformed_archive_sources_are_errors(tmp_path, source):
    with pytest.raises(VqdnaError):
        resolve_archive_source(source, tmp_path)
