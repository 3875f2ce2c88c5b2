"""Where a store lives: a local directory, or any pyarrow filesystem URI.

``open_location(root)`` accepts a path (``str`` or ``os.PathLike``), a ``file://`` URI, or a
URI pyarrow understands (``s3://bucket/prefix``, ``gs://bucket/prefix``, ``hdfs://...``).
Query parameters go to pyarrow (``s3://b/p?region=eu-west-1&endpoint_override=host:port&
scheme=http``). For ``s3://`` without ``endpoint_override``, the standard AWS variables
``AWS_ENDPOINT_URL_S3`` or ``AWS_ENDPOINT_URL`` (``http://host:port``) supply the endpoint,
so tests and S3-compatible servers need no code change.

Two kinds, differing in how a file is made visible whole:

* :class:`LocalLocation` writes a hidden temp file beside the target, fsyncs it, renames it
  into place and fsyncs the directory (``atomic_rename`` is true);
* :class:`ObjectLocation` serialises the whole file in memory and uploads it to its final
  name in one request; an object store makes an object visible only once its upload
  completes, so an interrupted upload leaves nothing (``atomic_rename`` is false, and the
  writer picks deterministic final names instead).
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import parse_qsl, unquote, urlencode, urlsplit, urlunsplit

import pyarrow as pa
import pyarrow.fs as pafs

from morphtune._atomic import atomic_write, fsync_directory

__all__ = ["FileEntry", "LocalLocation", "Location", "ObjectLocation", "open_location"]

TEMP_SUFFIX = ".tmp"
#: How long after a directory's last change a listing must be taken to be reused while
#: the directory's mtime stays the same (far above the kernel's timestamp granularity).
_MTIME_MARGIN_NS = 100_000_000


@dataclass(frozen=True)
class FileEntry:
    """A file in a listing: ``name`` within its directory, ``path`` for the location."""

    name: str
    path: str
    size: int
    mtime_ns: int


class Location(ABC):
    """A store root on some filesystem; paths are ``/``-joined strings."""

    #: True where files are written as temp file + rename (local disk).
    atomic_rename: bool = False

    def __init__(self, root: str, display: str) -> None:
        self.root = root
        self.display = display

    def join(self, *names: str) -> str:
        return "/".join([self.root.rstrip("/"), *names]) if self.root else "/".join(names)

    @abstractmethod
    def list_files(self, directory: str) -> list[FileEntry]:
        """Regular files directly in ``directory`` (none if it is missing), any order."""

    def list_files_cached(self, directory: str) -> list[FileEntry]:
        """:meth:`list_files`; a location may answer from a listing it proved current."""
        return self.list_files(directory)

    @abstractmethod
    def list_dirs(self, directory: str) -> list[str]:
        """Names of the subdirectories of ``directory`` (none if it is missing)."""

    @abstractmethod
    def is_dir(self, path: str) -> bool: ...

    @abstractmethod
    def stat(self, path: str) -> FileEntry | None:
        """The file at ``path``, or ``None`` when there is none."""

    @abstractmethod
    def makedirs(self, directory: str) -> None: ...

    @abstractmethod
    def open_input(self, path: str) -> Any:
        """A seekable binary file for reading (``pq.ParquetFile`` accepts it)."""

    @abstractmethod
    def read_bytes(self, path: str) -> bytes: ...

    @abstractmethod
    def write_whole(self, path: str, write: Callable[[BinaryIO], object]) -> None:
        """Write ``path`` so that readers see the previous file or the whole new one."""

    @abstractmethod
    def delete(self, path: str) -> None:
        """Remove a file; a missing file is not an error."""

    @abstractmethod
    def delete_tree(self, directory: str) -> None:
        """Remove ``directory`` and everything under it; a missing one is not an error."""

    def identity(self, path: str) -> str | None:
        """A string that changes whenever the file at ``path`` is replaced; ``None`` if absent."""
        entry = self.stat(path)
        return None if entry is None else f"{entry.size}:{entry.mtime_ns}"

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.display!r})"


class LocalLocation(Location):
    """A directory on local disk (temp file, fsync, rename)."""

    atomic_rename = True

    def __init__(self, root: Path) -> None:
        super().__init__(os.fspath(root), os.fspath(root))
        self.path = root
        self._listings: dict[str, tuple[int, int, int, list[FileEntry]]] = {}

    def list_files(self, directory: str) -> list[FileEntry]:
        try:
            with os.scandir(directory) as entries:
                return [
                    FileEntry(entry.name, entry.path, -1, -1)  # parts are immutable: no stat
                    for entry in entries
                    if entry.is_file()
                ]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def list_files_cached(self, directory: str) -> list[FileEntry]:
        """:meth:`list_files`, answered from the previous listing while the directory's
        modification time proves nothing changed since.

        An entry added, removed or renamed sets the directory's mtime to the time of the
        change (kernel timestamps are coarse: one clock tick, a few ms). So if the mtime is
        unchanged and our listing was taken more than :data:`_MTIME_MARGIN_NS` after it,
        any later change would have moved it: the old listing still holds.
        """
        try:
            stat = os.stat(directory)
        except (FileNotFoundError, NotADirectoryError):
            return []
        cached = self._listings.get(directory)
        if cached is not None:
            ino, mtime, listed_at, entries = cached
            if (ino, mtime) == (
                stat.st_ino,
                stat.st_mtime_ns,
            ) and listed_at - mtime > _MTIME_MARGIN_NS:
                return entries
        listed_at = time.time_ns()
        entries = self.list_files(directory)
        self._listings[directory] = (stat.st_ino, stat.st_mtime_ns, listed_at, entries)
        return entries

    def list_dirs(self, directory: str) -> list[str]:
        try:
            with os.scandir(directory) as entries:
                return [entry.name for entry in entries if entry.is_dir()]
        except (FileNotFoundError, NotADirectoryError):
            return []

    def is_dir(self, path: str) -> bool:
        return os.path.isdir(path)

    def stat(self, path: str) -> FileEntry | None:
        try:
            result = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        return FileEntry(os.path.basename(path), path, result.st_size, result.st_mtime_ns)

    def identity(self, path: str) -> str | None:
        try:
            result = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            return None
        # every atomic write renames a new file into place: a new inode each time
        return f"{result.st_ino}:{result.st_size}:{result.st_mtime_ns}"

    def makedirs(self, directory: str) -> None:
        os.makedirs(directory, exist_ok=True)

    def open_input(self, path: str) -> Any:
        return pa.OSFile(path, "rb")

    def read_bytes(self, path: str) -> bytes:
        return Path(path).read_bytes()

    def write_whole(self, path: str, write: Callable[[BinaryIO], object]) -> None:
        atomic_write(Path(path), write)

    def delete(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def delete_tree(self, directory: str) -> None:
        try:
            shutil.rmtree(directory)
        except FileNotFoundError:
            pass

    def sync_directory(self, directory: str) -> None:
        fsync_directory(Path(directory))

    def remove_stale_temp_files(self, directory: str, min_age_s: float) -> int:
        """Remove temp files (``.*.tmp``) older than ``min_age_s``, left by killed writers."""
        removed = 0
        horizon = time.time() - min_age_s
        for entry in self.list_files(directory):
            if not (entry.name.startswith(".") and entry.name.endswith(TEMP_SUFFIX)):
                continue
            try:
                if os.stat(entry.path).st_mtime <= horizon:
                    os.unlink(entry.path)
                    removed += 1
            except FileNotFoundError:  # its writer renamed or removed it meanwhile
                continue
        return removed


class ObjectLocation(Location):
    """A prefix on a pyarrow filesystem (S3, GCS, HDFS, ...): whole-object uploads."""

    def __init__(self, filesystem: pafs.FileSystem, root: str, display: str) -> None:
        super().__init__(root.rstrip("/"), display)
        self.filesystem = filesystem

    def _infos(self, directory: str) -> list[pafs.FileInfo]:
        selector = pafs.FileSelector(directory, allow_not_found=True, recursive=False)
        try:
            return list(self.filesystem.get_file_info(selector))
        except (FileNotFoundError, NotADirectoryError):
            return []

    def list_files(self, directory: str) -> list[FileEntry]:
        return [
            FileEntry(info.base_name, info.path, int(info.size or 0), int(info.mtime_ns or 0))
            for info in self._infos(directory)
            if info.type == pafs.FileType.File
        ]

    def list_dirs(self, directory: str) -> list[str]:
        return [
            info.base_name
            for info in self._infos(directory)
            if info.type == pafs.FileType.Directory
        ]

    def is_dir(self, path: str) -> bool:
        return bool(self.filesystem.get_file_info(path).type == pafs.FileType.Directory)

    def stat(self, path: str) -> FileEntry | None:
        info = self.filesystem.get_file_info(path)
        if info.type != pafs.FileType.File:
            return None
        return FileEntry(info.base_name, info.path, int(info.size or 0), int(info.mtime_ns or 0))

    def identity(self, path: str) -> str | None:
        # Listings give size and a modification time in whole seconds: a small file such as
        # the manifest can change within a second at the same size, so hash its content.
        try:
            data = self.read_bytes(path)
        except (FileNotFoundError, IsADirectoryError):
            return None
        return hashlib.sha256(data).hexdigest()

    def makedirs(self, directory: str) -> None:
        self.filesystem.create_dir(directory, recursive=True)

    def open_input(self, path: str) -> Any:
        return self.filesystem.open_input_file(path)

    def read_bytes(self, path: str) -> bytes:
        with self.filesystem.open_input_stream(path) as stream:
            return bytes(stream.read())

    def write_whole(self, path: str, write: Callable[[BinaryIO], object]) -> None:
        # Serialise first: an error while encoding then leaves no object at all, and the
        # upload below either completes (the object appears whole) or leaves nothing.
        buffer = io.BytesIO()
        write(buffer)
        with self.filesystem.open_output_stream(path) as stream:
            stream.write(buffer.getbuffer())

    def delete(self, path: str) -> None:
        try:
            self.filesystem.delete_file(path)
        except FileNotFoundError:
            pass

    def delete_tree(self, directory: str) -> None:
        try:
            self.filesystem.delete_dir(directory)
        except FileNotFoundError:
            pass


def _with_endpoint_from_environment(uri: str) -> str:
    parts = urlsplit(uri)
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if "endpoint_override" in query or not endpoint:
        return uri
    endpoint_parts = urlsplit(endpoint if "://" in endpoint else f"https://{endpoint}")
    query["endpoint_override"] = endpoint_parts.netloc
    query.setdefault("scheme", endpoint_parts.scheme or "https")
    return urlunsplit(parts._replace(query=urlencode(query)))


def _display(uri: str) -> str:
    """The URI without its query (which may hold credentials) for messages."""
    return urlunsplit(urlsplit(uri)._replace(query="", fragment=""))


def open_location(root: str | os.PathLike[str] | Location) -> Location:
    """The :class:`Location` for ``root``; ``ValueError`` naming ``root`` if unusable."""
    if isinstance(root, Location):
        return root
    if isinstance(root, os.PathLike):
        return LocalLocation(Path(root))
    if not isinstance(root, str) or not root:
        raise ValueError(f"root must be a non-empty path or URI string, got {root!r}")
    if "://" not in root:
        return LocalLocation(Path(root))
    scheme = root.split("://", 1)[0].lower()
    if scheme == "file":
        return LocalLocation(Path(unquote(urlsplit(root).path)))
    uri = _with_endpoint_from_environment(root) if scheme == "s3" else root
    try:
        filesystem, path = pafs.FileSystem.from_uri(uri)
    except (pa.ArrowException, ValueError, OSError) as error:
        raise ValueError(
            f"root {_display(root)!r} is not a usable filesystem URI "
            f"({type(error).__name__}: {error})"
        ) from error
    if isinstance(filesystem, pafs.LocalFileSystem):
        return LocalLocation(Path(path))
    return ObjectLocation(filesystem, path, _display(root))
