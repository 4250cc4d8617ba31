"""The hostile corpus (tests/hostile_corpus.py) end to end through `mmsent score` on a real local Ray:
poison JSON lines, malformed and hostile URLs (a local server that trickles, hangs, redirects to
malformed URLs, sends gzip bombs), device files and FIFOs, paths out of the dump, invisible texts,
an unclosed CSV quote. Every input row comes out once, with exactly the code its case names, and
the job ends in bounded time."""

from __future__ import annotations

import time

import pyarrow.parquet as pq
from hostile_corpus import FETCH, truncated_gzip, write_dump
from hostile_http import HostileServer

from mmsent import codes
from mmsent.cli import main


def test_every_hostile_row_gets_its_code_and_the_job_ends(ray_local, tmp_path, capsys):
    out = tmp_path / "out"
    with HostileServer() as server:
        expected = write_dump(tmp_path / "dump", server)
        data, lines = truncated_gzip()
        (tmp_path / "dump/cut.jsonl.gz").write_bytes(data)
        start = time.monotonic()
        code = main(["score", str(tmp_path / "dump"), str(out), "--set", *FETCH])
        took = time.monotonic() - start
    printed = capsys.readouterr().out
    # every row is there, but the rows past the gzip's break cannot be read: the job says so
    assert code == 1 and codes.INPUT_READ_ERROR in printed and "missing 0" in printed, printed
    table = pq.ParquetDataset(sorted(map(str, out.glob("*.parquet")))).read()
    got: dict[str, dict[int, str | None]] = {}
    for row in table.select(["input_file", "input_row", "error"]).to_pylist():
        got.setdefault(row["input_file"].rsplit("/", 1)[1], {})[row["input_row"]] = row["error"]
    for name, want_codes in expected.items():
        rows = sorted(got[name])
        wrong = {
            r: (got[name][r], want)
            for r, want in zip(rows, want_codes, strict=True)
            if got[name][r] != want
        }
        assert len(rows) == len(want_codes) and not wrong, (name, wrong)
    cut = [got["cut.jsonl.gz"][r] for r in sorted(got["cut.jsonl.gz"])]
    assert sorted(got["cut.jsonl.gz"]) == list(range(len(cut))) and 1 < len(cut) < lines
    assert cut == [None] * (len(cut) - 1) + [
        codes.INPUT_READ_ERROR
    ]  # the rows before the break stand
    assert table.num_rows == sum(len(v) for v in expected.values()) + len(cut)
    internal = [d for d in table.column("error_detail").to_pylist() if d]
    assert not [e for e in table.column("error").to_pylist() if e == "internal_error"], internal
    assert took < 120, f"the job took {took:.0f} s: something waited past its deadline"
