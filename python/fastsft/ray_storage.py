"""Where a Ray run's inputs, work units and output live: local paths, or object stores.

A plain path or a `file://` URI is local: it must be on storage every node sees (a shared
filesystem), and it is read and written in place, as before. Any other URI (`s3://...`,
`gs://...`, `hdfs://...`) names an object, or a directory-like prefix, on a `pyarrow.fs`
filesystem: the one `pyarrow.fs.FileSystem.from_uri` makes from the URI and the environment of the
process that uses it (credentials, `AWS_ENDPOINT_URL`, ...), or the `filesystem` given to
`fastsft.prep(..., engine="ray", filesystem=...)` (a `pyarrow.fs.FileSystem`, or an fsspec one,
wrapped). That filesystem object travels to the Ray tasks with the work.

What this is not: a cache, or a reader the Rust pipeline uses. The pipeline reads and writes local
files; a task copies its inputs in and its unit out (`ray_unit.py`), the driver the units in and
the dataset out. An object store has no rename, so completeness is marked by the file written
last: a unit's `manifest.json` (or `rejected-only.json`), the dataset's `manifest.json`.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
from dataclasses import dataclass
from typing import Any

from fastsft.errors import FastSFTError, FileAccessError, InputError, InputNotFoundError, MissingExtraError, UsageError

# Large enough that a stream of a multi-GB file makes few calls; what one copy buffers.
COPY_BYTES = 8 << 20
# rust/writer.rs pads every .npy header to this size.
NPY_HEADER = 128


def is_remote(path: str) -> bool:
    """A URI with a scheme other than `file` (a Windows drive letter is not a scheme)."""
    match = re.match(r"^([A-Za-z][A-Za-z0-9+.-]+)://", path)
    return match is not None and match.group(1).lower() != "file"


def _pyarrow_fs():
    try:
        import pyarrow.fs as pafs
    except ImportError:
        raise MissingExtraError("object-store paths need pyarrow on this machine and every node: pip install pyarrow") from None
    return pafs


@dataclass(frozen=True)
class Place:
    """A file or directory: `path` on `fs`, or a local path when `fs` is None. `uri` is how the
    user named it (for messages)."""

    fs: Any
    path: str
    uri: str

    @property
    def local(self) -> bool:
        return self.fs is None

    def join(self, name: str) -> Place:
        if self.local:
            return Place(None, os.path.join(self.path, name), os.path.join(self.uri, name))
        return Place(self.fs, f"{self.path.rstrip('/')}/{name}", f"{self.uri.rstrip('/')}/{name}")

    def parent_and_name(self) -> tuple[Place, str]:
        if self.local:
            head, name = os.path.split(self.path.rstrip(os.sep))
            return Place(None, head, os.path.dirname(self.uri.rstrip(os.sep)) or head), name
        head, _, name = self.path.rstrip("/").rpartition("/")
        uri_head = self.uri.rstrip("/").rpartition("/")[0]
        return Place(self.fs, head, uri_head), name


def locate(path: str | os.PathLike, filesystem: Any = None) -> Place:
    """The place a path or URI names. `filesystem`, when given, serves every remote URI."""
    given = os.fspath(path)
    if given.startswith("file://"):
        return Place(None, os.path.abspath(given[len("file://") :]), given)
    if not is_remote(given):
        return Place(None, os.path.abspath(given), given)
    pafs = _pyarrow_fs()
    if filesystem is not None:
        fs = filesystem if isinstance(filesystem, pafs.FileSystem) else pafs.PyFileSystem(pafs.FSSpecHandler(filesystem))
        return Place(fs, given.split("://", 1)[1].split("?", 1)[0], given)
    try:
        fs, inner = pafs.FileSystem.from_uri(given)
    except (OSError, ValueError) as error:
        raise UsageError(
            f"{given}: not a filesystem pyarrow knows ({first_line(error)}); pass filesystem= for an fsspec one"
        ) from None
    return Place(fs, inner, given)


def expand(uri: str, filesystem: Any = None) -> list[str]:
    """The objects a URI names: itself, or, when its path holds `*` or `[...]` (`?` starts a URI's
    query), the files it matches under the prefix before the first such part (`**` crosses `/`),
    sorted. A pattern that matches nothing is an error naming it, as for local globs."""
    path, mark, query = uri.partition("?")
    query = mark + query  # kept on every match: it may carry the endpoint
    scheme, _, inner = path.partition("://")
    if not re.search(r"[*\[]", inner):
        return [uri]
    parts = inner.split("/")
    fixed = next(k for k, part in enumerate(parts) if re.search(r"[*\[]", part))
    prefix = locate(f"{scheme}://{'/'.join(parts[:fixed])}{query}", filesystem)
    pafs = _pyarrow_fs()
    try:
        infos = prefix.fs.get_file_info(pafs.FileSelector(prefix.path, recursive=True, allow_not_found=True))
    except OSError as error:
        raise storage_error(error, prefix, output=False) from None
    pattern = re.compile(
        "".join(
            ".*" if t == "**" else "[^/]*" if t == "*" else t if t.startswith("[") else re.escape(t)
            for t in re.split(r"(\*\*|\*|\[[^\]]*\])", inner)
        )
        + "$"
    )
    root = prefix.path.rstrip("/")
    found = sorted(
        f"{scheme}://{'/'.join(parts[:fixed])}{info.path[len(root) :]}{query}"
        for info in infos
        if info.type == pafs.FileType.File and pattern.match("/".join(parts[:fixed]) + info.path[len(root) :])
    )
    if not found:
        raise InputNotFoundError(f"{uri}: no object matches this pattern")
    return found


def first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def storage_error(error: BaseException, place: Place, *, output: bool) -> FastSFTError:
    """A store's failure as one line naming the URI, what went wrong and what to do; an input's
    is an input error (exit 3), the output's or a work unit's an output error (exit 5)."""
    kind = FileAccessError if output else InputError
    detail = first_line(error)
    if isinstance(error, FastSFTError):
        return error
    if "NETWORK_CONNECTION" in detail or "Could not connect" in detail or "Couldn't resolve host" in detail:
        return kind(
            f"{place.uri}: the object store cannot be reached ({detail}); check its endpoint (AWS_ENDPOINT_URL) and the network"
        )
    if "NO_SUCH_BUCKET" in detail or "bucket does not exist" in detail.lower():
        return kind(f"{place.uri}: no such bucket; create it, or name an existing one")
    if re.search(
        r"ACCESS_DENIED|INVALID_ACCESS_KEY|InvalidAccessKeyId|SignatureDoesNotMatch|credentials|HTTP status 40[13]", detail
    ):
        return kind(
            f"{place.uri}: access denied ({detail}); give this machine and every node credentials for the store "
            "(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS or a role)"
        )
    if isinstance(error, FileNotFoundError):
        return InputNotFoundError(f"{place.uri}: no such file")
    return kind(f"{place.uri}: {detail}")


def file_size_and_stamp(place: Place) -> tuple[int, int]:
    """(size, modification time in ns, 0 when the store keeps none) of an input; a clear error
    when it is missing or the store cannot say."""
    if place.local:
        if not os.path.exists(place.path):
            raise InputNotFoundError(f"{place.uri}: no such file")
        st = os.stat(place.path)
        return st.st_size, st.st_mtime_ns
    pafs = _pyarrow_fs()
    try:
        info = place.fs.get_file_info(place.path)
        if info.type == pafs.FileType.NotFound:
            bucket = place.path.split("/", 1)[0]
            if place.fs.get_file_info(bucket).type == pafs.FileType.NotFound:
                raise InputNotFoundError(f"{place.uri}: no such bucket '{bucket}'; create it, or name an existing one")
            raise InputNotFoundError(f"{place.uri}: no such file")
    except OSError as error:
        raise storage_error(error, place, output=False) from None
    if info.type != pafs.FileType.File:
        raise UsageError(f"{place.uri}: a directory on an object store; name its files (or a local copy of it)")
    return int(info.size), int(info.mtime_ns or 0)


def exists(place: Place) -> bool:
    if place.local:
        return os.path.isfile(place.path)
    try:
        return bool(place.fs.get_file_info(place.path).type == _pyarrow_fs().FileType.File)
    except OSError as error:
        raise storage_error(error, place, output=True) from None


def read_text(place: Place) -> str:
    if place.local:
        with open(place.path, encoding="utf-8") as f:
            return f.read()
    try:
        with place.fs.open_input_stream(place.path) as f:
            return bytes(f.read()).decode("utf-8")
    except OSError as error:
        raise storage_error(error, place, output=True) from None


def write_text(place: Place, text: str) -> None:
    """Writes a small file whole: locally under a temporary name renamed into place, on a store
    as one object (which appears whole or not at all)."""
    if place.local:
        os.makedirs(os.path.dirname(place.path), exist_ok=True)
        tmp = f"{place.path}.tmp-{os.getpid()}"
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, place.path)
        return
    try:
        with place.fs.open_output_stream(place.path) as f:
            f.write(text.encode("utf-8"))
    except OSError as error:
        raise storage_error(error, place, output=True) from None


def download(place: Place, local_path: str) -> None:
    """Streams an object to a local file, in `COPY_BYTES` pieces."""
    try:
        with place.fs.open_input_stream(place.path) as src, open(local_path, "wb") as dst:
            while chunk := src.read(COPY_BYTES):
                dst.write(chunk)
    except OSError as error:
        raise storage_error(error, place, output=False) from None


def upload_file(local_path: str, place: Place) -> None:
    """Streams a local file to an object (which appears whole when the stream is closed)."""
    try:
        with open(local_path, "rb") as src, place.fs.open_output_stream(place.path) as dst:
            while chunk := src.read(COPY_BYTES):
                dst.write(chunk)
    except OSError as error:
        raise storage_error(error, place, output=True) from None


def upload_dir(local_dir: str, place: Place, last: str) -> None:
    """Copies the files of `local_dir` under `place`, `last` after all others: its presence says
    that every other file is there and whole."""
    for name in sorted(os.listdir(local_dir), key=lambda name: name == last):
        upload_file(os.path.join(local_dir, name), place.join(name))


def download_dir(place: Place, local_dir: str, names: list[str]) -> dict[str, str]:
    """Copies the named files of `place` into `local_dir`; returns the sha256 of each `.npy`
    file's data (after its 128-byte header, as the manifest's `array_sha256` covers it), computed
    on the way."""
    os.makedirs(local_dir, exist_ok=True)
    sums = {}
    for name in names:
        source = place.join(name)
        sha, skip = hashlib.sha256(), NPY_HEADER if name.endswith(".npy") else None
        try:
            with place.fs.open_input_stream(source.path) as src, open(os.path.join(local_dir, name), "wb") as dst:
                seen = 0
                while chunk := src.read(COPY_BYTES):
                    dst.write(chunk)
                    if skip is not None:
                        sha.update(memoryview(chunk)[max(0, skip - seen) :])
                    seen += len(chunk)
        except OSError as error:
            raise storage_error(error, source, output=True) from None
        if skip is not None:
            sums[name] = sha.hexdigest()
    return sums


def list_names(place: Place) -> list[str]:
    """The names directly under a directory or prefix ([] when there is none)."""
    if place.local:
        return sorted(os.listdir(place.path)) if os.path.isdir(place.path) else []
    pafs = _pyarrow_fs()
    try:
        infos = place.fs.get_file_info(pafs.FileSelector(place.path, allow_not_found=True))
    except OSError as error:
        raise storage_error(error, place, output=True) from None
    return sorted(info.base_name for info in infos)


def remove(place: Place, missing_ok: bool = True) -> None:
    """Removes a directory (or prefix) and everything under it."""
    if place.local:
        shutil.rmtree(place.path, ignore_errors=missing_ok)
        return
    try:
        place.fs.delete_dir(place.path)
    except FileNotFoundError:
        if not missing_ok:
            raise
    except OSError as error:
        raise storage_error(error, place, output=True) from None


def delete_file(place: Place) -> None:
    try:
        place.fs.delete_file(place.path)
    except FileNotFoundError:
        pass
    except OSError as error:
        raise storage_error(error, place, output=True) from None


def check_bucket(place: Place) -> None:
    """The output's bucket (the first part of its path) must exist: a clear error before any work."""
    if place.local:
        return
    pafs = _pyarrow_fs()
    bucket = place.path.split("/", 1)[0]
    try:
        missing = place.fs.get_file_info(bucket).type == pafs.FileType.NotFound
    except OSError as error:
        raise storage_error(error, place, output=True) from None
    if missing:
        raise FileAccessError(f"{place.uri}: no such bucket '{bucket}'; create it, or name an existing one")
