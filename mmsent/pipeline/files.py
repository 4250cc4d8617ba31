"""Paths of a scoring job: the names it has always imported, now from THE reader of dumps
(mmsent.io.dumps), which lists inputs for training too.

    files = list_inputs("s3://bucket/dump/*.jsonl")   # sorted URIs
    fs, path = filesystem("out/scores")                # (LocalFileSystem, "/abs/out/scores")
"""

from __future__ import annotations

from ..io.dumps import COMPRESSED, FORMATS, file_format, filesystem, list_inputs, parent, to_uri

__all__ = ["COMPRESSED", "FORMATS", "file_format", "filesystem", "list_inputs", "parent", "to_uri"]
