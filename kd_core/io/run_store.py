"""Where a run directory lives: a local folder, or any ``pyarrow.fs`` URI (``s3://``, ``gs://``, ``hdfs://``, ``file://``).

Steps read and write plain local files (Hugging Face ``save_pretrained``, Parquet, JSON), so a
run directory in an object store is worked on through a **staging folder** on each process's
local disk, and this module is the one layer between the two:

* **Writing.** A step writes its outputs under the staging folder; :meth:`RunStore.push` then
  uploads them. A folder's files go first and its ``result.json`` last, each file written
  under a temporary name and moved into place (:func:`pyarrow.fs.FileSystem.move`: a rename
  on a local or HDFS file system; on S3 and GCS a server-side copy, which makes the object
  appear whole or not at all). So, as on a local disk, a step whose result file exists in the
  store is complete, and anything else is run (or resumed) again.
* **Reading.** A result file is read from the store itself, which is the authority: a step is
  finished when *its store* says so, whichever node ran it. A model folder or knowledge table
  another step wrote is fetched into the staging folder the first time this process needs it
  (:meth:`RunStore.local`).
* **Naming.** Results name the files of their run by their path relative to the run
  directory (:meth:`RunStore.name_of`: ``steps/teacher/model``), and readers resolve that
  against the run directory they are in (:meth:`RunStore.resolve`), so any node finds them,
  and a run directory copied or moved elsewhere (another folder, another bucket) reads its
  own files, never the original's. A location that is already absolute (a path or URI:
  results of older versions, or results taken from another run directory) is used as it is.
* **Checkpoints** of a train step (and its best epoch's model) are pushed when written and
  fetched before it starts, so a step re-run on another node (a lost node, a killed worker)
  resumes where it stopped. A checkpoint is a folder that must never be seen half-replaced,
  and object stores cannot rename a folder, so it is pushed as a new *version*
  (``<name>.versions/<id>/``) and then named by one small pointer object (``<name>.latest``),
  written last; the version it replaces is deleted after.

For a local path every operation is the plain file operation and the staging folder *is*
the run directory: nothing is copied. The staging folder of a URI is a fresh temporary folder
per process and store (removed when the process exits normally), so a process never reads a
copy left by an earlier job; a worker removes its staging folders when the job stops it
(:func:`clear_staging`). Credentials come from the environment, as for any ``pyarrow.fs``
user (``AWS_ACCESS_KEY_ID``/``AWS_SECRET_ACCESS_KEY``, ``GOOGLE_APPLICATION_CREDENTIALS``...);
options such as an S3 endpoint go in the URI's query (``s3://bucket/run?endpoint_override=...``).
"""

from __future__ import annotations

import atexit
import functools
import hashlib
import re
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pyarrow.fs as pafs

from kd_core.io.errors import StorageError

RESULT_NAME = "result.json"
#: A URI's scheme and ``//`` (RFC 3986; two letters at least, so ``C:/x`` stays a path).
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]+://")
#: Staging folders made by this process, per store location (module doc).
_STAGING: dict[str, Path] = {}


def is_uri(location: str | Path) -> bool:
    """Whether ``location`` names a file system by scheme (``s3://...``) rather than a local path."""
    return _SCHEME.match(str(location)) is not None


def join(location: str, *parts: str) -> str:
    """``location`` (a path or a URI, whose query stays at the end) with ``parts`` appended."""
    if not is_uri(location):
        return str(Path(location, *parts))
    base, query = _uri_parts(location)
    return "/".join([base, *parts]) + query


def _uri_parts(uri: str) -> tuple[str, str]:
    """``(base, query)`` of ``uri``: ``s3://b/run?x=1`` -> ``("s3://b/run", "?x=1")``."""
    base, _, query = uri.partition("?")
    return base.rstrip("/"), f"?{query}" if query else ""


@dataclass(frozen=True)
class RunStore:
    """A run directory at ``location``: a local path (made absolute) or a ``pyarrow.fs`` URI (module doc)."""

    location: str

    def __post_init__(self) -> None:
        if not is_uri(self.location):
            object.__setattr__(self, "location", str(Path(self.location).expanduser().resolve()))
            return
        try:
            _filesystem(self.location)
        except (ValueError, OSError) as err:  # pyarrow.lib.ArrowInvalid is a ValueError
            raise StorageError(self.location, "run directory", f"not a file system URI pyarrow can open: "
                               f"{str(err).splitlines()[0]}") from err

    @property
    def remote(self) -> bool:
        """Whether the run directory is a URI (worked on through a staging folder)."""
        return is_uri(self.location)

    @property
    def local_root(self) -> Path:
        """The local folder steps read and write: the run directory itself, or this process's staging folder."""
        if not self.remote:
            return Path(self.location)
        if self.location not in _STAGING:
            if not _STAGING:
                atexit.register(clear_staging)
            _STAGING[self.location] = Path(tempfile.mkdtemp(prefix="kd_staging_"))
        return _STAGING[self.location]

    # ------------------------------------------------------------------ locations

    def location_of(self, path: Path) -> str:
        """Where the local file ``path`` (under :attr:`local_root`) is: its absolute path, or its URI in the store."""
        return str(path) if not self.remote else join(self.location, self.name_of(path))

    def name_of(self, path: Path) -> str:
        """How results name the local file ``path`` (under :attr:`local_root`): relative to the run directory
        (module doc: naming)."""
        return path.relative_to(self.local_root).as_posix()

    def resolve(self, location: str) -> str:
        """Where a location a result named is: a relative one (:meth:`name_of`) in this run directory, an absolute
        path or a URI as it is (module doc: naming)."""
        if is_uri(location) or Path(location).is_absolute():
            return location
        return join(self.location, location)

    def local(self, location: str) -> str:
        """A local path for ``location`` (a path, a model name or a URI), fetching a URI's file or folder once."""
        if not is_uri(location):
            return location
        base, _ = _uri_parts(self.location)
        location_base, _ = _uri_parts(location)
        if self.remote and location_base.startswith(base + "/"):  # this store's file: its file system, made once
            target = self.local_root / location_base[len(base) + 1:]
            found = target.exists() or self.pull(target)
        else:  # another store's file (results of a run directory copied from one store to another name the first)
            target = self.local_root / "fetched" / hashlib.sha256(location_base.encode()).hexdigest()[:16] / \
                Path(location_base).name
            found = target.exists() or _download(*_filesystem(location), target, location)
        if not found:
            raise StorageError(location, "read", "not found in the store")
        return str(target)

    def _remote_path(self, path: Path) -> tuple[pafs.FileSystem, str]:
        fs, root = _filesystem(self.location)
        return fs, f"{root.rstrip('/')}/{path.relative_to(self.local_root).as_posix()}".rstrip("/")

    # ------------------------------------------------------------------ reading

    def read_text(self, path: Path) -> str | None:
        """The text of the file ``path`` (under :attr:`local_root`) as the store holds it, ``None`` if absent."""
        if not self.remote:
            return path.read_text() if path.exists() else None
        fs, remote = self._remote_path(path)
        with _storage(self.location, "read"):
            if fs.get_file_info(remote).type != pafs.FileType.File:
                return None
            with fs.open_input_stream(remote) as stream:
                return stream.read().decode()

    def present(self, *names: str) -> list[str]:
        """Which of the run directory's files and folders ``names`` exist, as the store holds them."""
        if not self.remote:
            return [name for name in names if (self.local_root / name).exists()]
        found = []
        with _storage(self.location, "read"):
            for name in names:
                fs, remote = self._remote_path(self.local_root / name)
                if fs.get_file_info(remote).type != pafs.FileType.NotFound:
                    found.append(name)
        return found

    def pull(self, path: Path) -> bool:
        """Fetch the store's file or folder ``path`` into the staging folder (replacing it); whether it exists."""
        if not self.remote:
            return path.exists()
        return _download(*self._remote_path(path), path, self.location)

    # ------------------------------------------------------------------ writing

    def push(self, path: Path) -> None:
        """Upload the local file or folder ``path`` to the store: files first, any ``result.json`` last (module doc)."""
        if not self.remote:
            return
        fs, remote = self._remote_path(path)
        files = sorted(path.rglob("*")) if path.is_dir() else [path]
        files = [f for f in files if f.is_file()]
        files.sort(key=lambda f: f.name == RESULT_NAME)  # stable: the result file(s) go last
        with _storage(self.location, "write"):
            for file in files:
                target = remote if file == path else f"{remote}/{file.relative_to(path).as_posix()}"
                _put(fs, file, target)

    def push_version(self, path: Path) -> None:
        """Upload the local folder ``path`` as its store's new current version (module doc: checkpoints)."""
        if not self.remote:
            return
        fs, remote = self._remote_path(path)
        version = uuid.uuid4().hex[:12]
        with _storage(self.location, "write"):
            previous = self._current_version(fs, remote)
            for file in sorted(f for f in path.rglob("*") if f.is_file()):
                _put(fs, file, f"{remote}.versions/{version}/{file.relative_to(path).as_posix()}")
            _put(fs, version.encode(), f"{remote}.latest")
            if previous is not None:
                fs.delete_dir(f"{remote}.versions/{previous}")

    def pull_version(self, path: Path) -> bool:
        """Fetch the store's current version of the folder ``path`` into place; whether there is one."""
        if not self.remote:
            return path.exists()
        fs, remote = self._remote_path(path)
        with _storage(self.location, "read"):
            version = self._current_version(fs, remote)
        if version is None:
            return False
        return _download(fs, f"{remote}.versions/{version}", path, self.location)

    def drop_versions(self, path: Path) -> None:
        """Delete every stored version of the folder ``path`` (the step that wrote them has finished)."""
        if not self.remote:
            return
        fs, remote = self._remote_path(path)
        with _storage(self.location, "write"):
            if fs.get_file_info(f"{remote}.latest").type == pafs.FileType.File:
                fs.delete_file(f"{remote}.latest")
            if fs.get_file_info(f"{remote}.versions").type == pafs.FileType.Directory:
                fs.delete_dir(f"{remote}.versions")

    @staticmethod
    def _current_version(fs: pafs.FileSystem, remote: str) -> str | None:
        if fs.get_file_info(f"{remote}.latest").type != pafs.FileType.File:
            return None
        with fs.open_input_stream(f"{remote}.latest") as stream:
            return stream.read().decode().strip()

    def remove(self, *names: str) -> None:
        """Delete the files and folders ``names`` of the run directory, in the store and in the staging folder (a
        fresh run starts clean)."""
        for name in names:
            path = self.local_root / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)
            if not self.remote:
                continue
            fs, remote = self._remote_path(path)
            with _storage(self.location, "write"):
                kind = fs.get_file_info(remote).type
                if kind == pafs.FileType.Directory:
                    fs.delete_dir(remote)
                elif kind == pafs.FileType.File:
                    fs.delete_file(remote)


def clear_staging() -> None:
    """Remove this process's staging folders (a worker calls it before it is stopped; the rest at exit)."""
    for folder in _STAGING.values():
        shutil.rmtree(folder, ignore_errors=True)
    _STAGING.clear()


def _put(fs: pafs.FileSystem, source: Path | bytes, target: str) -> None:
    """Write the local file (or the bytes) ``source`` to ``target`` under a temporary name, then move it into place
    (module doc)."""
    parent = target.rsplit("/", 1)[0]
    fs.create_dir(parent, recursive=True)
    partial = f"{target}.{uuid.uuid4().hex[:8]}.partial"
    if isinstance(source, bytes):
        with fs.open_output_stream(partial) as stream:
            stream.write(source)
    else:
        pafs.copy_files(str(source), partial, source_filesystem=pafs.LocalFileSystem(), destination_filesystem=fs)
    try:
        fs.move(partial, target)
    except BaseException:
        fs.delete_file(partial)
        raise


@functools.lru_cache(maxsize=64)
def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """The file system of ``uri`` and the path in it, made once per process (S3 may ask for the bucket's region)."""
    return pafs.FileSystem.from_uri(uri)


def _download(fs: pafs.FileSystem, remote: str, target: Path, location: str) -> bool:
    """Copy the file or folder ``remote`` of ``fs`` (``location`` names it in errors) to ``target`` via a temporary
    name, so ``target`` is whole or absent; ``False`` when the store has no ``remote``."""
    partial = target.with_name(f"{target.name}.{uuid.uuid4().hex[:8]}.partial")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        with _storage(location, "read"):
            kind = fs.get_file_info(remote).type
            if kind == pafs.FileType.NotFound:
                return False
            if kind == pafs.FileType.Directory:
                partial.mkdir()  # copy_files creates the folders below the destination, not the destination
            pafs.copy_files(remote, str(partial), source_filesystem=fs, destination_filesystem=pafs.LocalFileSystem())
        if target.is_dir():
            shutil.rmtree(target)
        partial.replace(target)
        return True
    finally:
        if partial.is_dir():
            shutil.rmtree(partial, ignore_errors=True)
        else:
            partial.unlink(missing_ok=True)


@contextmanager
def _storage(location: str, what: str) -> Iterator[None]:
    """Turn a store's refusal (no bucket, no permission, no connection) into one :class:`StorageError` line."""
    try:
        yield
    except OSError as err:  # pyarrow raises OSError (with the store's message) for every refused request
        raise StorageError(location, what, f"the store refused: {str(err).splitlines()[0]}") from err
