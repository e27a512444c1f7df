"""Download stage: fetch the files of a packaged manifest (the images, or the released weights of the
comparison methods), verified by size and SHA-256.

Every file lands at ``out/<dataset>/<file>``. It is written to a temporary beside it
(`rlcsc.atomic`), checked, and only then renamed, so a file under its final name is always a verified
one; files already present and verified are skipped. The source is either a local mirror laid out
the same way (``mirror/<dataset>/<file>``) or the pinned URL of each entry.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import os
import socket
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor, as_completed
from contextlib import contextmanager, suppress
from http.client import HTTPConnection, HTTPResponse
from pathlib import Path
from time import sleep
from urllib.error import HTTPError
from urllib.request import HTTPHandler, HTTPSHandler, Request, build_opener

from tqdm import tqdm

from rlcsc.atomic import atomically, write_text
from rlcsc.errors import RlcscError
from rlcsc.manifest import MANIFEST, WEIGHTS, Entry, file_sha256, load_manifest

MIRROR_ENV = "RLCSC_DATA_MIRROR"
WEIGHTS_MIRROR_ENV = "RLCSC_WEIGHTS_MIRROR"
MIRRORS = {MANIFEST: MIRROR_ENV, WEIGHTS: WEIGHTS_MIRROR_ENV}  # the variable naming each manifest's mirror
TIMEOUT_S = 60.0  # per network request
BACKOFF_S = 1.0  # first pause between network attempts; doubles after each failure
CHUNK = 1 << 16  # a network read waits for the whole chunk: small enough that an interruption ends it at once


def download_all(
    out: Path,
    datasets: Sequence[str] | None = None,
    mirror: Path | None = None,
    retries: int = 3,
    jobs: int = 8,
    manifest: Path = MANIFEST,
) -> int:
    """Fetch the files of `manifest` (of `datasets`, all when None) into `out`; return how many came.

    Verified files already in `out` are skipped and not counted. `mirror` defaults to the folder
    named by the manifest's variable ($RLCSC_DATA_MIRROR for the images, $RLCSC_WEIGHTS_MIRROR for the
    weights) when set and not empty; else files come from their URLs.
    """
    variable = MIRRORS[manifest]
    if mirror is None and os.environ.get(variable):
        mirror = Path(os.environ[variable])
        _check_mirror(mirror, f", which ${variable} names; unset it to fetch from the URLs")
    return fetch(load_manifest(manifest, datasets), out, mirror, retries, jobs)


def fetch(
    entries: Sequence[Entry],
    out: Path,
    mirror: Path | None = None,
    retries: int = 3,
    jobs: int = 8,
) -> int:
    """Fetch `entries` into `out` with `jobs` threads, from `mirror` or else their URLs.

    Returns the number of files fetched (verified files already in `out` are skipped). The first
    error (or an interruption) cancels the files not yet started, stops the running ones at their next
    chunk (a request waiting on a server at once), and is raised once they have stopped.
    """
    if retries < 1 or jobs < 1:
        raise RlcscError(f"retries and jobs must be at least 1 (got {retries} and {jobs})")
    if mirror is not None:
        _check_mirror(mirror)
    made = [folder for folder in dict.fromkeys(p for e in entries for p in (out / e.relpath).parents)
            if not folder.exists()]  # removed again where a fetch that failed leaves them empty
    fetched = 0
    total = sum(e.bytes for e in entries)
    stop = _Stop()
    with (
        tqdm(total=total, unit="B", unit_scale=True, desc="download") as bar,
        ThreadPoolExecutor(max_workers=jobs) as pool,
    ):
        futures = [pool.submit(_fetch_one, e, out, mirror, retries, bar, stop) for e in entries]
        try:
            for done, future in enumerate(as_completed(futures), 1):
                fetched += future.result()
                bar.set_postfix_str(f"{done}/{len(entries)} files", refresh=False)
        except BaseException:
            stop.set()
            raise
        finally:
            pool.shutdown(cancel_futures=True)
            for folder in sorted(made, key=lambda f: len(f.parts), reverse=True):  # the deepest first
                with suppress(OSError):  # not empty: a file fetched, or one of the user's
                    folder.rmdir()
    return fetched


def _check_mirror(mirror: Path, named: str = "") -> None:
    """One clear error unless `mirror` is a folder (`named`: what names it, said after it)."""
    if not mirror.exists():
        raise RlcscError(f"data mirror not found: {mirror}{named}")
    if not mirror.is_dir():
        raise RlcscError(f"data mirror {mirror} is a file, not a folder of <dataset>/<file>{named}")


def _fetch_one(entry: Entry, out: Path, mirror: Path | None, retries: int, bar: tqdm, stop: _Stop) -> bool:
    """Bring one file into place, renamed there only once verified (unless `stop` is set first); False when a
    verified copy was already there."""
    dest = out / entry.relpath
    if dest.is_file():
        if dest.stat().st_size == entry.bytes and file_sha256(dest) == entry.sha256:
            bar.update(entry.bytes)
            return False
        bar.write(f"{dest} is not the file the manifest pins: fetching it again", file=sys.stderr)
    dest.parent.mkdir(parents=True, exist_ok=True)

    def fetch_verified(part: Path) -> None:
        if mirror is not None:
            size, digest = _copy(entry, mirror, part, bar, stop)
        else:
            size, digest = _download(entry, part, retries, bar, stop)
        if size != entry.bytes:
            raise RlcscError(
                f"size mismatch for {entry.relpath}: expected {entry.bytes} bytes, got {size}"
            )
        if digest != entry.sha256:
            raise RlcscError(
                f"checksum mismatch for {entry.relpath}: expected sha256 {entry.sha256}, got {digest}"
            )

    atomically(fetch_verified, dest)
    return True


def _copy(entry: Entry, mirror: Path, part: Path, bar: tqdm, stop: _Stop) -> tuple[int, str]:
    """Copy `entry` from `mirror` into `part`; a failed read is said of the mirror's file, not of the output."""
    source = mirror / entry.relpath
    try:
        src = open(source, "rb")
    except FileNotFoundError:
        raise RlcscError(f"missing in data mirror {mirror}: {entry.relpath}") from None

    def chunks() -> Iterator[bytes]:
        try:
            while chunk := src.read(CHUNK):
                yield chunk
        except OSError as err:
            raise OSError(err.errno, err.strerror, str(source)) from None

    with src:
        return _stream(chunks(), part, bar, stop)


class _Stop:
    """Set by the first error or an interruption: the transfers under way end at their next chunk, and a request
    waiting on its server, to connect (TCP, then TLS), for its answer or for the rest of a file, ends at once, not
    after TIMEOUT_S: each socket a request makes is shut down. Only the look-up of a server's address is not cut
    short."""

    def __init__(self) -> None:
        self._set = threading.Event()
        self._lock = threading.Lock()  # held while the sockets are shut down: none is closed meanwhile
        self._sockets: set[socket.socket] = set()  # a duplicate of each socket of the requests under way
        self._request = threading.local()  # the duplicates of this thread's request
        self.opener = build_opener(_WatchedHTTP(self), _WatchedHTTPS(self))

    def is_set(self) -> bool:
        return self._set.is_set()

    def set(self) -> None:
        with self._lock:
            self._set.set()
            for sock in self._sockets:
                with suppress(OSError):  # one not connected yet, or shut already
                    sock.shutdown(socket.SHUT_RDWR)

    @contextmanager
    def open(self, url: str) -> Iterator[HTTPResponse]:
        """The response to a request of `url`, each socket it makes watched until the response is closed."""
        mine: list[socket.socket] = []
        self._request.sockets = mine
        try:
            with self.opener.open(url, timeout=TIMEOUT_S) as response:
                yield response
        finally:
            with self._lock:
                self._sockets.difference_update(mine)
            for sock in mine:
                sock.close()

    def create_connection(self, address: tuple[str, int], timeout: float,
                          source_address: tuple[str, int] | None = None) -> socket.socket:
        """`socket.create_connection`, each socket watched from before it connects: through a duplicate, which
        outlives TLS's taking the socket over, and is closed with the response."""
        error: OSError = OSError(f"no address found for {address[0]}")
        for family, kind, proto, _, target in socket.getaddrinfo(*address, 0, socket.SOCK_STREAM):
            sock = socket.socket(family, kind, proto)
            with self._lock:
                if self._set.is_set():
                    sock.close()
                    raise _Stopped
                self._sockets.add(watched := sock.dup())
            self._request.sockets.append(watched)
            try:
                sock.settimeout(timeout)
                if source_address:
                    sock.bind(source_address)
                sock.connect(target)
            except OSError as err:
                sock.close()
                error = err
                continue
            if self.is_set():  # set in the instant before the connect began, when a shutdown does not stop it
                sock.close()
                raise _Stopped
            return sock
        raise error


class _Watched:
    """A mixin for urllib's HTTP and HTTPS handlers: their connections made by `_Stop.connections`."""

    def __init__(self, stop: _Stop) -> None:
        super().__init__()
        self.stop = stop

    def do_open(self, http_class: type[HTTPConnection], req: Request, **kwargs: object) -> HTTPResponse:
        def connection(*args: object, **kw: object) -> HTTPConnection:
            made = http_class(*args, **kw)
            made._create_connection = self.stop.create_connection  # type: ignore[attr-defined]
            return made

        return super().do_open(connection, req, **kwargs)  # type: ignore[misc]


class _WatchedHTTP(_Watched, HTTPHandler):
    pass


class _WatchedHTTPS(_Watched, HTTPSHandler):
    pass


class _NetworkError(Exception):
    """A request or a read that failed on the network (its reason the message): worth another attempt."""


class _Stopped(Exception):
    """The download was stopped (another file's error, or an interruption) while this file was under way."""


def _body(url: str, stop: _Stop) -> Iterator[bytes]:
    """The bytes at `url`, in chunks; a failure of the request or of a read is a `_NetworkError`."""
    try:
        with stop.open(url) as response:
            while chunk := response.read(CHUNK):
                yield chunk
    except HTTPError as err:
        raise _NetworkError(f"HTTP {err.code} {err.reason}") from None
    except (OSError, http.client.HTTPException) as err:  # URLError, timeout, reset, short read
        raise _NetworkError(getattr(err, "reason", None) or err) from None


def _download(entry: Entry, part: Path, retries: int, bar: tqdm, stop: _Stop) -> tuple[int, str]:
    """Fetch `entry` into `part`, up to `retries` times on network failures; an error writing `part` (a full
    disk) is raised at once."""
    for attempt in range(retries):
        if attempt and not stop.is_set():
            sleep(BACKOFF_S * 2 ** (attempt - 1))
        if stop.is_set():
            raise _Stopped
        try:
            return _stream(_body(entry.url, stop), part, bar, stop)
        except _NetworkError as err:
            reason = err
    raise RlcscError(f"download failed after {retries} attempt{'s' * (retries > 1)}: {entry.url}: {reason}")


def _stream(chunks: Iterable[bytes], part: Path, bar: tqdm, stop: _Stop) -> tuple[int, str]:
    """Write `chunks` into `part` until they end or `stop` is set; return its size and SHA-256. The bytes
    count on `bar` as they come, and are taken back if the copy fails (a next attempt counts them again)."""
    digest, size = hashlib.sha256(), 0
    try:
        with open(part, "wb") as dst:
            for chunk in chunks:
                if stop.is_set():
                    raise _Stopped
                dst.write(chunk)
                digest.update(chunk)
                size += len(chunk)
                bar.update(len(chunk))
    except BaseException:
        bar.update(-size)
        raise
    return size, digest.hexdigest()


def write_listing(path: Path, datasets: Sequence[str] | None = None, manifest: Path = MANIFEST) -> None:
    """Write {"dataset/file": sha256} of the manifest's files, atomically (the download stage's output).

    Call it after `download_all` has verified them: downstream stages depend on this small file,
    which changes exactly when the pinned bytes do.
    """
    listing = {e.relpath: e.sha256 for e in load_manifest(manifest, datasets)}
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text(json.dumps(listing, indent=1, sort_keys=True) + "\n", path)
