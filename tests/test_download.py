"""The download stage: manifest, mirror copies, verification, retries, and a loopback HTTP fetch."""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import os
import re
import select
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.error import URLError

import numpy as np
import pytest
from tqdm import tqdm

from rlcsc.color import rgb2y
from rlcsc.data import download
from rlcsc.data.download import MIRROR_ENV, download_all, fetch
from rlcsc.errors import RlcscError
from rlcsc.imageio import read_image
from rlcsc.manifest import TEST_SETS, Entry, digest, load_manifest

COUNTS = {"T91": 91, "BSD200": 200, "Set5": 5, "Set14": 14, "BSD100": 100, "Urban100": 100}


@pytest.fixture
def set5_copy(mirror: Path, tmp_path: Path) -> Path:
    """A writable copy of the mirror holding only Set5."""
    copy = tmp_path / "mirror"
    shutil.copytree(mirror / "Set5", copy / "Set5", copy_function=shutil.copyfile)
    return copy


@pytest.fixture
def set5() -> list[Entry]:
    return load_manifest(datasets=["Set5"])


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def flip_byte(path: Path, at: int = 100) -> None:
    data = bytearray(path.read_bytes())
    data[at] ^= 0xFF
    path.write_bytes(bytes(data))


def parts(out: Path) -> list[Path]:
    """The temporaries (hidden files) left in `out`."""
    return list(out.rglob(".*"))


def test_manifest_parses() -> None:
    entries = load_manifest()
    assert len(entries) == 510
    assert {d: sum(e.dataset == d for e in entries) for d in COUNTS} == COUNTS
    assert len({e.relpath for e in entries}) == 510
    for e in entries:
        assert re.fullmatch(r"[0-9a-f]{64}", e.sha256), e
        assert e.url.startswith("https://") and re.search(r"/[0-9a-f]{40}/", e.url), e
        assert e.bytes > 0 and e.relpath == f"{e.dataset}/{e.file}"


def test_every_image_pins_the_sha256_of_what_is_read_of_it(mirror: Path) -> None:
    """`y_sha256` of a test image (what the evaluation accepts in place of the file's bytes) is that of the Y
    channel of the very file the manifest pins; `pixels_sha256` of a training image (what the augmentation
    accepts), that of its pixels, every channel."""
    for e in load_manifest():
        assert sha256(mirror / e.relpath) == e.sha256, e
        pixels = read_image(mirror / e.relpath)
        test = e.dataset in TEST_SETS
        assert (e.y_sha256, e.pixels_sha256) == ((digest(rgb2y(pixels)), "") if test else ("", digest(pixels))), e
    assert digest(np.zeros((2, 3), np.uint8)) == hashlib.sha256(b"2x3\n" + bytes(6)).hexdigest()  # shape, then rows
    assert digest(np.zeros((2, 3, 3), np.uint8)) == hashlib.sha256(b"2x3x3\n" + bytes(18)).hexdigest()


def test_manifest_filters_and_rejects_unknown_datasets() -> None:
    picked = load_manifest(datasets=["Set14", "Set5"])
    assert [e.dataset for e in picked] == ["Set5"] * 5 + ["Set14"] * 14
    with pytest.raises(RlcscError, match=r"Set6.*Set5.*Urban100"):
        load_manifest(datasets=["Set5", "Set6"])


def test_mirror_download_verifies_then_skips(
    mirror: Path, set5: list[Entry], tmp_path: Path
) -> None:
    out = tmp_path / "data"
    assert download_all(out, ["Set5"], mirror=mirror, jobs=3) == 5
    for e in set5:
        assert sha256(out / e.relpath) == e.sha256
    listing = sorted(p.relative_to(out).as_posix() for p in out.rglob("*"))
    assert listing == ["Set5"] + sorted(e.relpath for e in set5)
    assert download_all(out, ["Set5"], mirror=mirror) == 0


def test_corrupt_mirror_file_is_rejected(
    set5_copy: Path, set5: list[Entry], tmp_path: Path
) -> None:
    bad = set5[2]
    flip_byte(set5_copy / bad.relpath)
    out = tmp_path / "data"
    with pytest.raises(RlcscError) as err:
        download_all(out, ["Set5"], mirror=set5_copy)
    message = str(err.value)
    assert bad.relpath in message
    assert bad.sha256 in message and sha256(set5_copy / bad.relpath) in message
    assert not (out / bad.relpath).exists()
    assert parts(out) == []


def test_truncated_mirror_file_is_rejected(
    set5_copy: Path, set5: list[Entry], tmp_path: Path
) -> None:
    bad = set5[0]
    (set5_copy / bad.relpath).write_bytes((set5_copy / bad.relpath).read_bytes()[:1000])
    out = tmp_path / "data"
    expected = rf"size mismatch for {bad.relpath}: expected {bad.bytes} bytes, got 1000"
    with pytest.raises(RlcscError, match=expected):
        download_all(out, ["Set5"], mirror=set5_copy, jobs=1)
    assert not (out / bad.relpath).exists()
    assert parts(out) == []


def test_missing_mirror_file_named_and_mirror_taken_from_env(
    set5_copy: Path, set5: list[Entry], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    gone = set5[4]
    (set5_copy / gone.relpath).unlink()
    monkeypatch.setenv(MIRROR_ENV, str(set5_copy))
    out = tmp_path / "data"
    expected = rf"^missing in data mirror {re.escape(str(set5_copy))}: {gone.relpath}$"
    with pytest.raises(RlcscError, match=expected):
        download_all(out, ["Set5"])
    assert not (out / gone.relpath).exists()
    assert parts(out) == []


def test_a_fetch_that_fails_leaves_no_folder_it_made_empty(tmp_path: Path) -> None:
    """Nothing fetched: the folders made for the files are gone again, and those that were there are kept."""
    (tmp_path / "mirror").mkdir()
    out = tmp_path / "data"
    with pytest.raises(RlcscError, match="^missing in data mirror"):
        download_all(out, ["Set5", "Set14"], mirror=tmp_path / "mirror")
    assert not out.exists()
    (out / "Set5").mkdir(parents=True)
    with pytest.raises(RlcscError, match="^missing in data mirror"):
        download_all(out, ["Set5", "Set14"], mirror=tmp_path / "mirror")
    assert [p.relative_to(out).as_posix() for p in out.rglob("*")] == ["Set5"]


def test_a_mirror_that_fails_to_read_is_named_and_so_is_the_variable_that_names_a_missing_one(
    set5_copy: Path, set5: list[Entry], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read error of the mirror's file names that file (not the output the user looks at); a mirror that is not
    there names the variable it came from."""
    broken = set5_copy / set5[2].relpath
    broken.unlink()
    broken.symlink_to("/proc/self/mem")  # opens, then fails to read (address 0 is not mapped): EIO
    with pytest.raises(OSError) as err:
        download_all(tmp_path / "data", ["Set5"], mirror=set5_copy, jobs=1)
    assert err.value.filename == str(broken) and err.value.errno == errno.EIO
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(RlcscError, match=f"^data mirror not found: {tmp_path / 'nowhere'}, which \\${MIRROR_ENV} "
                                         "names; unset it to fetch from the URLs$"):
        download_all(tmp_path / "data", ["Set5"])
    (tmp_path / "notes").write_text("mine\n")
    monkeypatch.setenv(MIRROR_ENV, str(tmp_path / "notes"))
    with pytest.raises(RlcscError, match=f"^data mirror {tmp_path / 'notes'} is a file, not a folder of "
                                         f"<dataset>/<file>, which \\${MIRROR_ENV} names; unset it"):
        download_all(tmp_path / "data", ["Set5"])
    with pytest.raises(RlcscError, match=f"^data mirror {tmp_path / 'notes'} is a file, not a folder of "
                                         "<dataset>/<file>$"):
        download_all(tmp_path / "data", ["Set5"], mirror=tmp_path / "notes")


def test_corrupt_existing_file_is_refetched(
    mirror: Path, set5: list[Entry], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "data"
    download_all(out, ["Set5"], mirror=mirror)
    flip_byte(out / set5[1].relpath)
    (out / set5[3].relpath).write_bytes(b"")
    capsys.readouterr()
    assert download_all(out, ["Set5"], mirror=mirror) == 2
    assert [sha256(out / e.relpath) for e in set5] == [e.sha256 for e in set5]
    err = capsys.readouterr().err
    assert all(f"{out / set5[i].relpath} is not the file the manifest pins: fetching it again" in err for i in (1, 3))


def test_files_beside_the_downloads_are_kept(
    mirror: Path, set5: list[Entry], tmp_path: Path
) -> None:
    out = tmp_path / "data"
    download_all(out, ["Set5"], mirror=mirror)
    (out / set5[0].relpath).unlink()
    keep = [out / "Set5" / f".{set5[0].file}.part", out / "Set5" / f".{Path(set5[0].file).stem}.tmp.png",
            out / "Set5" / "notes.txt", out / "other.txt"]  # the first two: the temporary names once used
    for path in keep:
        path.write_text("mine")
    assert download_all(out, ["Set5"], mirror=mirror) == 1
    assert all(path.read_text() == "mine" for path in keep)
    assert sorted(parts(out)) == sorted(keep[:2])


@pytest.fixture
def refused(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every network request fails after 20 ms (as a real one takes a while); returns the URLs."""
    calls: list[str] = []

    def refuse(stop: object, url: str) -> None:
        calls.append(url)
        time.sleep(0.02)
        raise URLError("connection refused")

    monkeypatch.setattr(download._Stop, "open", refuse)
    return calls


def test_network_failure_retries_then_names_url(
    refused: list[str], set5: list[Entry], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pauses: list[float] = []
    monkeypatch.setattr(download, "sleep", pauses.append)
    entry = set5[0]
    with pytest.raises(RlcscError, match=rf"{re.escape(entry.url)}: connection refused"):
        fetch([entry], tmp_path, retries=4)
    assert refused == [entry.url] * 4
    assert len(pauses) == 3 and all(p > 0 for p in pauses)
    assert not (tmp_path / entry.relpath).exists()
    assert parts(tmp_path) == []
    with pytest.raises(RlcscError, match=rf"^download failed after 1 attempt: {re.escape(entry.url)}: connection"):
        fetch([entry], tmp_path, retries=1)


def test_first_error_cancels_the_rest(
    refused: list[str], set5: list[Entry], tmp_path: Path
) -> None:
    entries = [dataclasses.replace(set5[0], file=f"f{i}.png", url=f"u{i}") for i in range(40)]
    with pytest.raises(RlcscError, match="connection refused"):
        fetch(entries, tmp_path, retries=1, jobs=2)
    assert len(refused) < 10  # not 40: the files not yet started were cancelled


@pytest.fixture
def http_root(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Path, str]]:
    """Serve a temp folder on 127.0.0.1; yields (folder, base URL)."""
    for var in ("http_proxy", "HTTP_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(root)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join()


def test_network_download_over_loopback(
    http_root: tuple[Path, str],
    mirror: Path,
    set5: list[Entry],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    root, base = http_root
    for e in set5[:2]:
        (root / e.dataset).mkdir(exist_ok=True)
        shutil.copyfile(mirror / e.relpath, root / e.relpath)
    entries = [dataclasses.replace(e, url=f"{base}/{e.relpath}") for e in set5[:2]]
    out = tmp_path / "data"
    assert fetch(entries, out) == 2
    assert [sha256(out / e.relpath) for e in entries] == [e.sha256 for e in entries]

    monkeypatch.setattr(download, "sleep", lambda s: None)
    missing = dataclasses.replace(set5[2], url=f"{base}/{set5[2].relpath}")
    expected = rf"after 2 attempts: {re.escape(missing.url)}: HTTP 404"
    with pytest.raises(RlcscError, match=expected):
        fetch([missing], out, retries=2)
    assert fetch(entries, out) == 0
    assert parts(out) == []


DATA = bytes(range(256)) * 40
PINNED = Entry("Set5", "x.bin", len(DATA), hashlib.sha256(DATA).hexdigest(), "https://example.org/x.bin")
STALLED, WAIT = 3600.0, 60.0  # a stalled read's timeout in the child; the longest an interrupted download may take


@pytest.fixture
def served(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every network request returns `DATA`, without a pause between attempts; returns the URLs."""
    calls: list[str] = []

    def serve(stop: object, url: str) -> io.BytesIO:
        calls.append(url)
        return io.BytesIO(DATA)

    monkeypatch.setattr(download._Stop, "open", serve)
    monkeypatch.setattr(download, "sleep", lambda s: None)
    return calls


def test_a_full_disk_is_not_retried_and_names_the_file(
    served: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Full(io.BytesIO):
        def write(self, data: bytes) -> int:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(download, "open", lambda path, mode: Full(), raising=False)
    with pytest.raises(OSError) as err:
        fetch([PINNED], tmp_path, retries=3)
    assert served == [PINNED.url]
    assert (err.value.errno, err.value.filename) == (errno.ENOSPC, str(tmp_path / PINNED.relpath))
    assert not (tmp_path / PINNED.relpath).exists() and parts(tmp_path) == []


def test_retries_count_each_byte_once_on_the_progress_bar(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    class Reset(io.BytesIO):
        """A response whose connection breaks after its first 1000 bytes."""

        def read(self, size: int = -1) -> bytes:
            if self.tell():
                raise ConnectionResetError("connection reset")
            return super().read(1000)

    calls: list[str] = []

    def flaky(stop: object, url: str) -> io.BytesIO:
        calls.append(url)
        return Reset(DATA) if len(calls) < 3 else io.BytesIO(DATA)

    bars: list[tqdm] = []

    class Recorded(tqdm):
        def __init__(self, *args: object, **kwargs: object) -> None:
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(download._Stop, "open", flaky)
    monkeypatch.setattr(download, "sleep", lambda s: None)
    monkeypatch.setattr(download, "tqdm", Recorded)
    assert fetch([PINNED], tmp_path, retries=3) == 1
    assert calls == [PINNED.url] * 3 and sha256(tmp_path / PINNED.relpath) == PINNED.sha256
    assert bars[0].n == bars[0].total == len(DATA)


def test_the_first_error_stops_the_transfers_under_way(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file that fails (here its bytes are not the pinned ones) ends the download without waiting for a slow
    transfer to finish: that one stops at its next chunk, and neither file is put in place."""
    slow = dataclasses.replace(PINNED, file="slow.bin", url="https://example.org/slow.bin")
    reads: list[int] = []
    under_way = threading.Event()

    class Trickle(io.BytesIO):
        def read(self, size: int = -1) -> bytes:
            time.sleep(0.01)
            reads.append(1)
            under_way.set()
            return super().read(16)  # DATA in 640 reads: over 6 s

    def serve(stop: object, url: str) -> io.BytesIO:
        if url == slow.url:
            return Trickle(DATA)
        under_way.wait(timeout=30)  # the slow one has read its first chunk
        return io.BytesIO(b"not the pinned bytes")

    monkeypatch.setattr(download._Stop, "open", serve)
    with pytest.raises(RlcscError, match="size mismatch for Set5/x.bin"):
        fetch([slow, PINNED], tmp_path, retries=1, jobs=2)
    assert len(reads) < 100 and not (tmp_path / slow.relpath).exists() and parts(tmp_path) == []


def test_the_pause_between_attempts_doubles(refused: list[str], set5: list[Entry], tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """Exponential backoff: BACKOFF_S before the second attempt, then twice as long before each next one."""
    pauses: list[float] = []
    monkeypatch.setattr(download, "sleep", pauses.append)
    with pytest.raises(RlcscError, match="after 5 attempts"):
        fetch([set5[0]], tmp_path, retries=5)
    assert pauses == [download.BACKOFF_S * f for f in (1, 2, 4, 8)]


def test_a_short_read_is_retried(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A body that ends before its Content-Length (http.client's IncompleteRead, not an OSError) is a network
    failure like any other: tried again."""
    import http.client

    class Short(io.BytesIO):
        def read(self, size: int = -1) -> bytes:
            raise http.client.IncompleteRead(b"", len(DATA))

    calls: list[str] = []

    def flaky(stop: object, url: str) -> io.BytesIO:
        calls.append(url)
        return Short() if len(calls) == 1 else io.BytesIO(DATA)

    monkeypatch.setattr(download._Stop, "open", flaky)
    monkeypatch.setattr(download, "sleep", lambda s: None)
    assert fetch([PINNED], tmp_path, retries=2) == 1
    assert calls == [PINNED.url] * 2 and sha256(tmp_path / PINNED.relpath) == PINNED.sha256


def test_the_weights_come_from_their_own_mirror_variable(refused: list[str], tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """$RLCSC_WEIGHTS_MIRROR, not $RLCSC_DATA_MIRROR, is the weights' mirror, whether the other is set or not."""
    from rlcsc.data.download import WEIGHTS_MIRROR_ENV
    from rlcsc.manifest import WEIGHTS

    weights = tmp_path / "weights-mirror"
    weights.mkdir()
    monkeypatch.setenv(WEIGHTS_MIRROR_ENV, str(weights))
    first = load_manifest(WEIGHTS)[0]
    for images in (str(tmp_path / "no-such-image-mirror"), None):
        if images is None:
            monkeypatch.delenv(MIRROR_ENV)
        else:
            monkeypatch.setenv(MIRROR_ENV, images)
        with pytest.raises(RlcscError, match=rf"^missing in data mirror {re.escape(str(weights))}: {first.relpath}$"):
            download_all(tmp_path / "out", manifest=WEIGHTS, jobs=1)
    assert refused == []


def trusted_tls(tmp_path: Path, env: dict[str, str]) -> ssl.SSLContext:
    """A server's TLS context with a certificate of its own for 127.0.0.1, which `env` makes the client's only
    authority."""
    if not shutil.which("openssl"):
        pytest.skip("openssl makes the server's certificate")
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
                    "-days", "1", "-subj", "/CN=127.0.0.1", "-addext", "subjectAltName=IP:127.0.0.1"],
                   check=True, capture_output=True)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    env["SSL_CERT_FILE"] = str(cert)
    return context


def loopback_env() -> dict[str, str]:
    """The environment of a child that fetches from 127.0.0.1 directly, whatever proxy this one names."""
    return {k: v for k, v in os.environ.items() if k.lower() != "http_proxy"} | {"no_proxy": "127.0.0.1"}


def interrupted_download(url: str, out: Path, env: dict[str, str], stalled: Callable[[], None]) -> None:
    """Fetch PINNED from `url` into `out` in a child (its timeouts STALLED), send it Ctrl-C once `stalled()` has
    returned and half a second more, and check that it ended then with KeyboardInterrupt, not when a timeout ran out
    (this test waits WAIT for it), and left neither the file nor its temporary."""
    entry = dataclasses.replace(PINNED, url=url)
    # Ctrl-C raises KeyboardInterrupt in the child, also where the tests run as a background job of a script, whose
    # children start with SIGINT ignored
    script = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
              "from pathlib import Path; from rlcsc.data import download; from rlcsc.manifest import Entry; "
              f"download.TIMEOUT_S = {STALLED}; download.fetch([Entry(*{dataclasses.astuple(entry)!r})], "
              f"Path({str(out)!r}))")
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    try:
        stalled()
        time.sleep(0.5)  # the child waits on the server
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=WAIT)  # a wait that ran out its timeout would end after STALLED
    finally:
        proc.kill()
    assert b"KeyboardInterrupt" in err
    assert not (out / entry.relpath).exists() and parts(out) == []


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
@pytest.mark.parametrize("answered", [True, False], ids=["in-the-file", "before-its-answer"])
def test_an_interruption_ends_a_stalled_transfer_at_once(tmp_path: Path, answered: bool, tls: bool) -> None:
    """Ctrl-C while the server has stopped sending in the middle of a file, or has not answered the request (over
    HTTP, and over HTTPS as the pinned URLs are): the download ends then."""
    sent, release = threading.Event(), threading.Event()

    class Stalling(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if answered:
                self.send_response(200)
                self.send_header("Content-Length", str(len(DATA)))
                self.end_headers()
                self.wfile.write(DATA[:1000])
                self.wfile.flush()
            sent.set()
            release.wait(WAIT)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Stalling)
    env = loopback_env()
    if tls:
        server.socket = trusted_tls(tmp_path, env).wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    url = f"{'https' if tls else 'http'}://127.0.0.1:{server.server_address[1]}/x.bin"

    def stalled() -> None:  # the server has taken the request, and answered part of it or nothing
        if not sent.wait(60):
            pytest.fail("no request came")

    try:
        interrupted_download(url, tmp_path / "data", env, stalled)
    finally:
        release.set()
        server.shutdown()
        server.server_close()
        thread.join()


@pytest.mark.parametrize("phase", ["tcp-http", "tcp-https", "tls"])
def test_an_interruption_ends_a_connection_still_being_made_at_once(tmp_path: Path, phase: str) -> None:
    """Ctrl-C while the connection waits on the server: for TCP, a server whose queue of connections is full
    (its one place taken, it drops the client's SYN, which the client sends again until its timeout); for TLS, a
    server that takes the connection and never answers the client's hello (so no certificate is needed). The
    download ends then."""
    if not Path("/proc/net/tcp").exists():
        pytest.skip("Linux's /proc/net/tcp shows the client's SYN_SENT socket")
    with socket.create_server(("127.0.0.1", 0), backlog=0) as server:
        port = server.getsockname()[1]
        held: list[socket.socket] = []

        def connecting() -> None:  # a socket of this machine in SYN_SENT (02) to the server's port
            for _ in range(600):
                rows = [line.split() for line in Path("/proc/net/tcp").read_text().splitlines()[1:]]
                if any(row[2] == f"0100007F:{port:04X}" and row[3] == "02" for row in rows):
                    return
                time.sleep(0.1)
            pytest.fail("the client never waited to connect")

        def hello_sent() -> None:  # the connection taken, and the client's hello waiting unread
            connection, _ = server.accept()
            held.append(connection)
            if not select.select([connection], [], [], 60)[0]:
                pytest.fail("the client sent no hello")

        if phase.startswith("tcp"):
            held.append(socket.create_connection(("127.0.0.1", port)))  # takes the queue's one place
        scheme = "http" if phase == "tcp-http" else "https"
        try:
            interrupted_download(f"{scheme}://127.0.0.1:{port}/x.bin", tmp_path / "data", loopback_env(),
                                 connecting if phase.startswith("tcp") else hello_sent)
        finally:
            for connection in held:
                connection.close()
