"""Dataset downloads against a local HTTP server on 127.0.0.1."""

import hashlib
import http.server
import io
import tarfile
import threading
from functools import partial

import pytest

from datamodules.download import Archive, fetch
from sdcorr.errors import DataError


def make_archive(folder: str = "Data") -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, text in [(f"{folder}/a.txt", b"alpha"), (f"{folder}/sub/b.txt", b"beta")]:
            info = tarfile.TarInfo(name)
            info.size = len(text)
            tar.addfile(info, io.BytesIO(text))
    return buffer.getvalue()


@pytest.fixture
def server(tmp_path):
    """Serves the files of ``tmp_path / "www"`` on 127.0.0.1; yields (folder, base url); counts requests."""
    www = tmp_path / "www"
    www.mkdir()
    requests = []

    class Handler(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            requests.append(self.path)

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), partial(Handler, directory=str(www)))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield www, f"http://127.0.0.1:{httpd.server_address[1]}", requests
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_download_verify_and_extract(server, tmp_path):
    www, url, requests = server
    data = make_archive()
    (www / "data.tar.gz").write_bytes(data)
    archive = Archive(f"{url}/data.tar.gz", "data.tar.gz", "Data", hashlib.sha256(data).hexdigest(), len(data))
    root = fetch(archive, tmp_path / "datasets" / "MyData")
    assert (root / "a.txt").read_text() == "alpha" and (root / "sub" / "b.txt").read_text() == "beta"
    # nothing else left beside the dataset: no archive, no .part, no scratch folder
    assert [p.name for p in root.parent.iterdir()] == ["MyData"]
    fetch(archive, root)  # already there: no second download
    assert len(requests) == 1


def test_corrupted_archive_is_refused_and_removed(server, tmp_path):
    www, url, _ = server
    data = make_archive()
    (www / "data.tar.gz").write_bytes(data[:-50] + b"x" * 50)
    archive = Archive(f"{url}/data.tar.gz", "data.tar.gz", "Data", hashlib.sha256(data).hexdigest())
    with pytest.raises(DataError, match="corrupted download.*SHA-256"):
        fetch(archive, tmp_path / "d" / "Data")
    assert list((tmp_path / "d").iterdir()) == []


def test_not_an_archive_without_checksum_is_refused(server, tmp_path):
    www, url, _ = server
    (www / "page.tar.gz").write_bytes(b"<html>moved</html>")
    with pytest.raises(DataError, match="not a tar or zip archive"):
        fetch(Archive(f"{url}/page.tar.gz", "page.tar.gz", "Data"), tmp_path / "d" / "Data")


def test_wrong_top_level_folder_leaves_nothing_half_extracted(server, tmp_path):
    www, url, _ = server
    (www / "data.tar.gz").write_bytes(make_archive("Other"))
    with pytest.raises(DataError, match=r"expected a top-level folder Data/ in the archive, found \['Other'\]"):
        fetch(Archive(f"{url}/data.tar.gz", "data.tar.gz", "Data"), tmp_path / "d" / "Data")
    assert not (tmp_path / "d" / "Data").exists()
    assert [p.name for p in (tmp_path / "d").iterdir()] == ["data.tar.gz"]  # kept for a retry, verified


@pytest.mark.parametrize("where", ["missing file", "closed port"])
def test_offline_says_where_to_put_the_files(server, tmp_path, where):
    _, url, _ = server
    url = f"{url}/missing.tar.gz" if where == "missing file" else "http://127.0.0.1:9/data.tar.gz"
    with pytest.raises(DataError, match="(?s)could not download .*extract it so that its Data/ folder is"):
        fetch(Archive(url, "data.tar.gz", "Data"), tmp_path / "d" / "Data")
    assert list((tmp_path / "d").iterdir()) == []


def test_spair_prepare_data_downloads_the_official_layout(server, tmp_path, monkeypatch):
    from datamodules import spair
    from tests.fixtures_spair import write_spair

    www, url, _ = server
    write_spair(tmp_path / "made" / "SPair-71k")
    with tarfile.open(www / "SPair-71k.tar.gz", "w:gz") as tar:
        tar.add(tmp_path / "made" / "SPair-71k", arcname="SPair-71k")
    monkeypatch.setattr(spair, "SPAIR_ARCHIVE", Archive(f"{url}/SPair-71k.tar.gz", "SPair-71k.tar.gz", "SPair-71k"))
    module = spair.SPairDataModule(root=str(tmp_path / "data" / "SPair-71k"))
    module.prepare_data()
    module.setup("test")
    assert len(module.dataset) > 0 and module.dataset[0]["source_image"].shape[0] == 3
