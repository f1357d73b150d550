"""Remote inputs: the shared data served over HTTP on the loopback give the same results.

A ``http.server`` in a thread (127.0.0.1, random port) serves ../shared/data with byte-range
support (what uproot and fsspec need); describe_files, read_jet_table, sha256 and data.yaml
with relative paths are compared with the local files.
"""

from __future__ import annotations

import functools
import http.server
import re
import threading
from pathlib import Path

import awkward as ak
import pytest

from jec_coffea.cli import main
from jec_coffea.data.dataset import DatasetDescription, describe_files, file_sha256
from jec_coffea.errors import InputFileError

pytestmark = pytest.mark.shared_data

_RANGE = re.compile(r"(\d*)-(\d*)")


class _RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Static files with single and multiple byte ranges (RFC 7233)."""

    def log_message(self, format, *args):  # keep the test output quiet
        pass

    def do_GET(self):
        header = self.headers.get("Range")
        path = Path(self.translate_path(self.path))
        if not header or not path.is_file():
            super().do_GET()
            return
        data = path.read_bytes()
        size = len(data)
        ranges = []
        for part in header.removeprefix("bytes=").split(","):
            start, stop = _RANGE.fullmatch(part.strip()).groups()
            if start == "":
                first, last = size - int(stop), size - 1
            else:
                first, last = int(start), min(int(stop) if stop else size - 1, size - 1)
            ranges.append((first, last))
        self.send_response(206)
        if len(ranges) == 1:
            first, last = ranges[0]
            body = data[first : last + 1]
            self.send_header("Content-Type", "application/octet-stream")
            self.send_header("Content-Range", f"bytes {first}-{last}/{size}")
        else:
            boundary = "jec-coffea-boundary"
            chunks = []
            for first, last in ranges:
                chunks.append(
                    f"--{boundary}\r\nContent-Type: application/octet-stream\r\n"
                    f"Content-Range: bytes {first}-{last}/{size}\r\n\r\n".encode()
                    + data[first : last + 1]
                    + b"\r\n"
                )
            body = b"".join(chunks) + f"--{boundary}--\r\n".encode()
            self.send_header(
                "Content-Type", f"multipart/byteranges; boundary={boundary}"
            )
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def http_base(shared_data):
    """Base URL of ../shared/data served from a loopback HTTP server on a random port."""
    handler = functools.partial(_RangeHandler, directory=str(shared_data))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


@pytest.mark.parametrize(
    "relpath", ["pfnano/coffea_pfnano.root", "mljec/shards/4.root"]
)
def test_describe_and_read_over_http_equal_local(http_base, shared_data, relpath):
    from jec_coffea.data.reader import read_jet_table

    url = f"{http_base}/{relpath}"
    local = str(shared_data / relpath)
    assert file_sha256(url) == file_sha256(local)
    remote_desc = describe_files([url]).files[0]
    local_desc = describe_files([local]).files[0]
    assert remote_desc.path == url
    assert remote_desc.model_dump(exclude={"path"}) == local_desc.model_dump(
        exclude={"path"}
    )
    remote = read_jet_table(url)
    here = read_jet_table(local)
    assert remote.source == url
    assert (remote.layout, remote.missing) == (here.layout, here.missing)
    assert ak.array_equal(remote.jets, here.jets, equal_nan=True)


def test_data_yaml_over_http_resolves_relative_paths(http_base, tmp_path):
    desc = DatasetDescription.load(f"{http_base}/mljec/data.yaml")
    assert desc.paths()[0] == f"{http_base}/mljec/shards/1.root"
    desc.verify()  # counts read through HTTP
    # describe remote files from the command line, then verify the written yaml
    out = tmp_path / "remote.yaml"
    urls = [f"{http_base}/mljec/shards/{i}.root" for i in (1, 2)]
    assert main(["describe", *urls, "-o", str(out)]) == 0
    written = DatasetDescription.load(out)
    assert written.paths() == urls
    written.verify()


def test_missing_remote_file_is_a_clear_error(http_base):
    url = f"{http_base}/pfnano/no_such_file.root"
    with pytest.raises(InputFileError, match=r"no_such_file\.root"):
        describe_files([url])
    with pytest.raises(InputFileError, match=r"no_such_file\.root"):
        file_sha256(url)
