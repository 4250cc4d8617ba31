"""Paths of a scoring job: local paths, globs and s3:// prefixes, through pyarrow filesystems (S3
endpoint, keys and region from the usual AWS_* settings, so MinIO, moto and AWS all work).

    files = list_inputs("s3://bucket/dump/*.jsonl")   # sorted URIs
    fs, path = filesystem("out/scores")                # (LocalFileSystem, "/abs/out/scores")
"""

from __future__ import annotations

import fnmatch
import os
import re

import pyarrow.fs as pafs

FORMATS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "jsonl", ".csv": "csv",
           ".parquet": "parquet", ".pq": "parquet"}  # fmt: skip
COMPRESSED = (".gz", ".bz2", ".zst", ".lz4")  # read through pyarrow's compressed streams
_GLOB = re.compile(r"[*?\[]")


def filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    """(filesystem, path inside it) for a local path, file:// or s3:// URI."""
    if uri.startswith("s3://"):
        return pafs.FileSystem.from_uri(uri)
    path = uri[len("file://") :] if uri.startswith("file://") else uri
    return pafs.LocalFileSystem(), os.path.abspath(os.path.expanduser(path))


def to_uri(fs: pafs.FileSystem, path: str) -> str:
    return f"s3://{path}" if fs.type_name == "s3" else path


def parent(uri: str) -> str:
    return uri.rsplit("/", 1)[0] if "/" in uri else "."


def file_format(uri: str, fmt: str = "auto") -> str | None:
    """The format of one input file: `fmt` when given, else from the extension (None: unknown)."""
    if fmt != "auto":
        return fmt
    name = uri.lower()
    for ext in COMPRESSED:
        name = name.removesuffix(ext)
    return FORMATS.get(os.path.splitext(name)[1])


def _listed(info: pafs.FileInfo) -> bool:
    return info.is_file and not info.base_name.startswith(("_", "."))  # _SUCCESS, .crc, ...


def list_inputs(spec: str, fmt: str = "auto") -> list[str]:
    """Input files of a path, a folder (recursively: data files only), a glob or an s3:// prefix."""
    fs, path = filesystem(spec)
    if m := _GLOB.search(path):
        base = path[: m.start()].rsplit("/", 1)[0] or "/"
        infos = fs.get_file_info(pafs.FileSelector(base, recursive=True, allow_not_found=True))
        files = [i.path for i in infos if _listed(i) and fnmatch.fnmatchcase(i.path, path)]
    else:
        info = fs.get_file_info(path)
        if info.type == pafs.FileType.File:
            files = [path]
        elif info.type == pafs.FileType.Directory:
            infos = fs.get_file_info(pafs.FileSelector(path, recursive=True))
            files = [i.path for i in infos if _listed(i) and file_format(i.path, fmt)]
        else:
            files = []
    if not files:
        raise FileNotFoundError(f"no input files at {spec}")
    uris = sorted(to_uri(fs, f) for f in files)
    unknown = [u for u in uris if not file_format(u, fmt)]
    if unknown:
        raise ValueError(f"cannot tell the format of {unknown[0]}: set `format` in the config")
    return uris
