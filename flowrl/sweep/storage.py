"""Sweep storage that the cluster's nodes share instead of a file system: ``s3://``, ``gs://``, ``hdfs://``,
``file://`` or a path, through ``pyarrow.fs``.

A sweep with ``--storage URI`` keeps each trial in ``URI/<sweep>/<task>/<variant>/s<seed>``; the trial works in a
node-local folder (:func:`node_local_dir`) that :class:`TrialSync` restores from the storage before the run starts
and mirrors back while it runs (a new checkpoint at once, other files at most every ``every`` seconds, everything
at the end). Every failure is a :class:`StorageError` whose message is one line naming the problem and the fix.
"""

from __future__ import annotations

import os
import re
import socket
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

from flowrl.errors import MissingDependencyError, UserError, install_hint
from flowrl.run import files

CHECKPOINT = re.compile(r"^checkpoints/step_(\d+)\.pt$")
LOCAL_ENV = "FLOWRL_SWEEP_LOCAL_DIR"  # a node's folder for its trials' working copies
SCHEMES = "s3://, gs://, hdfs://, file:// or a path"


class StorageError(UserError):
    """The storage cannot be reached, read or written; the message is one line with the fix."""


def _fs_module():
    try:
        import pyarrow.fs as pafs
    except ImportError:
        raise MissingDependencyError(f"--storage needs pyarrow; fix: {install_hint('sweep')}") from None
    return pafs


def _shown(uri: str) -> str:
    """The URI without its query (which may hold an endpoint or keys): what messages show."""
    return uri.split("?", 1)[0]


def explain(uri: str, error: BaseException) -> str:
    """One line for a file system's error: what went wrong with the storage at ``uri``, and the fix."""
    text = " ".join(str(error).split())
    low = text.lower()
    where = f"storage '{_shown(uri)}'"
    if "unrecognized filesystem type" in low:
        scheme = urlsplit(uri).scheme or "?"
        return f"{where}: no file system for the scheme '{scheme}://' is installed; fix: use {SCHEMES}"
    if "libjvm" in low or "libhdfs" in low:
        return f"{where}: hdfs:// needs Java and libhdfs on this machine; fix: set JAVA_HOME and HADOOP_HOME"
    bucket = re.search(r"bucket '([^']+)' not found|nosuchbucket|bucket does not exist|bucket_not_found", low)
    if bucket:
        name = re.search(r"[Bb]ucket '([^']+)'", text)
        return (f"{where}: the bucket {repr(name.group(1)) if name else 'named there'} does not exist; fix: create "
                f"it, or correct the URI")
    if isinstance(error, PermissionError) or re.search(
            r"access_denied|accessdenied|invalidaccesskeyid|signaturedoesnotmatch|forbidden|permission denied|"
            r"unauthenticated|credentials|http 40[13]|invalid_grant|expired", low):
        return (f"{where} refused access ({text[:120]}); fix: give this machine credentials that may write there "
                f"(AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, GOOGLE_APPLICATION_CREDENTIALS) or a writable path")
    if getattr(error, "errno", None) == 28 or "no space left" in low or "quota" in low:
        return f"{where} is full ({text[:120]}); fix: free space there, then run the sweep again (it resumes)"
    return f"{where}: {text[:200]}; fix: check the URI ({SCHEMES}) and that this machine can reach it"


class Storage:
    """A folder of a file system named by a URI; paths below it are relative ``a/b/c`` strings."""

    def __init__(self, uri: str):
        pafs = _fs_module()
        if "://" not in uri:  # a plain path: pyarrow wants it absolute
            uri = str(Path(uri).expanduser().resolve())
        base, _, query = uri.partition("?")
        if base.startswith("s3://") and "allow_delayed_open" not in query:
            # Small files as one PutObject: fewer requests, and S3 look-alikes without multipart uploads work too.
            query = "&".join(filter(None, [query, "allow_delayed_open=true"]))
        self.base, self.query = base.rstrip("/") or base, query
        try:
            self.fs, self.root = pafs.FileSystem.from_uri(self.uri)
        except Exception as e:  # pyarrow raises ArrowInvalid, OSError, ValueError by scheme
            raise StorageError(explain(uri, e)) from None
        self.root = self.root.rstrip("/") or self.root

    @property
    def uri(self) -> str:
        return self.base + (f"?{self.query}" if self.query else "")

    def __str__(self) -> str:
        return self.base

    @property
    def name(self) -> str:
        """The folder's own name (a sweep's, for its trials' node-local folders)."""
        return self.base.rstrip("/").rsplit("/", 1)[-1]

    def join(self, *parts: str) -> "Storage":
        """The sub-folder ``parts`` of this one, on the same file system object (no new connection)."""
        rel = "/".join(p.strip("/") for p in parts if p)
        sub = object.__new__(Storage)
        sub.fs, sub.query = self.fs, self.query
        sub.base, sub.root = f"{self.base}/{rel}", f"{self.root}/{rel}"
        return sub

    def _path(self, rel: str) -> str:
        return f"{self.root}/{rel}" if rel else self.root

    def _do(self, what, *args):
        try:
            return what(*args)
        except Exception as e:
            raise StorageError(explain(self.uri, e)) from None

    def check(self) -> None:
        """Make the folder and write, read and delete a probe file: refused credentials, a missing bucket or a
        full disk show up here, as one line, before anything runs."""
        probe = f".probe-{socket.gethostname()}-{os.getpid()}"
        self._do(self.fs.create_dir, self.root)
        self.write_bytes(probe, b"flowrl")
        if self.read_bytes(probe) != b"flowrl":
            raise StorageError(f"storage '{self}' did not read back what was written; fix: check the URI")
        self.delete(probe)

    def files(self, rel: str = "") -> dict[str, int]:
        """Every file below ``rel`` (recursive): its path relative to this folder -> its size. None: {}."""
        pafs = _fs_module()
        top = self._path(rel)
        infos = self._do(self.fs.get_file_info, pafs.FileSelector(top, recursive=True, allow_not_found=True))
        cut = len(self.root) + 1
        return {i.path[cut:]: i.size for i in infos if i.type == pafs.FileType.File}

    def read_bytes(self, rel: str) -> bytes | None:
        """A file's bytes; None where it does not exist."""
        pafs = _fs_module()
        if self._do(self.fs.get_file_info, self._path(rel)).type != pafs.FileType.File:
            return None
        with self._do(self.fs.open_input_stream, self._path(rel)) as f:
            return self._do(f.read)

    def tail(self, rel: str, size: int = 65536) -> bytes:
        """The last ``size`` bytes of a file (b"" where it does not exist)."""
        pafs = _fs_module()
        info = self._do(self.fs.get_file_info, self._path(rel))
        if info.type != pafs.FileType.File:
            return b""
        with self._do(self.fs.open_input_file, self._path(rel)) as f:
            self._do(f.seek, max(0, info.size - size))
            return self._do(f.read)

    def write_bytes(self, rel: str, data: bytes) -> None:
        self._do(self._write, rel, lambda out: out.write(data))

    def put(self, local: Path, rel: str) -> None:
        """Upload a local file to ``rel``: written under a temporary name, then moved, so a reader (or a restore
        after a kill mid-upload) sees the old file or the whole new one, never part of one."""
        def copy(out):
            with open(local, "rb") as f:
                while chunk := f.read(1 << 22):
                    out.write(chunk)
        self._do(self._write, rel, copy)

    def _write(self, rel: str, fill) -> None:
        path = self._path(rel)
        parent, _, name = path.rpartition("/")
        tmp = f"{parent}/.{name}.{socket.gethostname()}.{os.getpid()}.tmp"
        self.fs.create_dir(parent)
        try:
            with self.fs.open_output_stream(tmp) as out:
                fill(out)
            self.fs.move(tmp, path)
        except BaseException:
            try:
                self.fs.delete_file(tmp)  # a partial file would hold the last free space
            except Exception:
                pass
            raise

    def get(self, rel: str, local: Path) -> None:
        """Download ``rel`` to ``local`` (atomically)."""
        local.parent.mkdir(parents=True, exist_ok=True)
        tmp = local.with_name(f".{local.name}.tmp")
        with self._do(self.fs.open_input_stream, self._path(rel)) as src, open(tmp, "wb") as dst:
            while chunk := self._do(src.read, 1 << 22):
                dst.write(chunk)
        os.replace(tmp, local)

    def delete(self, rel: str) -> None:
        pafs = _fs_module()
        if self._do(self.fs.get_file_info, self._path(rel)).type == pafs.FileType.File:
            self._do(self.fs.delete_file, self._path(rel))


def checkpoint_steps(names) -> list[int]:
    """The env steps of the checkpoints among relative file names, oldest first."""
    return sorted(int(m.group(1)) for n in names if (m := CHECKPOINT.match(n)))


def node_local_dir() -> Path:
    """This node's folder for working copies of trials: ``$FLOWRL_SWEEP_LOCAL_DIR``, else a folder in the node's
    temporary directory. Never shared: what other nodes need goes through the storage."""
    return Path(os.environ.get(LOCAL_ENV) or Path(tempfile.gettempdir()) / "flowrl-sweeps")


def download(store: Storage, dest: Path, checkpoints: bool = False) -> int:
    """Copy a storage folder (a sweep or a run) into ``dest``, without checkpoints unless asked; returns the count."""
    names = [n for n in store.files() if (checkpoints or files.CHECKPOINTS not in n.split("/")[:-1]) and not _hidden(n)]
    if not names:
        raise StorageError(f"storage '{store}' holds no files; fix: pass URI/<sweep> as tools/sweep.py --storage "
                           f"URI --out <sweep> wrote it")
    for n in names:
        store.get(n, Path(dest) / n)
    return len(names)


def _hidden(rel: str) -> bool:
    return any(part.startswith(".") for part in rel.split("/"))
