"""A hostile dump: JSONL lines, CSV and Parquet files that scraped data really holds, each with the
error code its output row must carry. Used by the end-to-end test (tests/test_hostile_corpus.py)
and by bench/hostile.py. Image URLs point only at 127.0.0.1 (a HostileServer) and local paths.

    cases = jsonl_cases(folder, server)      # [(line bytes, expected error or None)]
    write_dump(folder, server) -> {relative file: [expected error per input_row]}
"""

from __future__ import annotations

import gzip
import io
import json
import os
from pathlib import Path

from mmsent import codes

CAP = 256 * 1024  # the test's read.max_record_bytes (also the field cap)
FETCH = [
    "fetch.deadline_s=2",
    "fetch.timeout_s=1",
    "fetch.retries=1",
    "fetch.backoff_s=0.01",
    f"read.max_record_bytes={CAP}",
]


def _line(row) -> bytes:
    return row if isinstance(row, bytes) else json.dumps(row).encode()


def images(folder: Path) -> dict[str, bytes]:
    """Real and hostile image files under folder/images; returns the good ones by name."""
    from PIL import Image

    from mmsent.sample_data import real_photos

    d = folder / "images"
    d.mkdir(parents=True, exist_ok=True)
    good = dict(real_photos(max_side=128)[:2])
    for name, data in good.items():
        (d / f"{name}.jpg").write_bytes(data)
    buf = io.BytesIO()
    Image.new("1", (12_000, 12_000)).save(buf, "PNG")  # ~30 KB, 144 Mpx when decoded
    (d / "bomb.png").write_bytes(buf.getvalue())
    buf = io.BytesIO()
    Image.new("RGB", (32, 32), "red").save(buf, "ICO")  # an image, but not an allowed format
    (d / "icon.ico").write_bytes(buf.getvalue())
    (d / "folder.jpg").mkdir(exist_ok=True)
    if not (d / "escape.jpg").is_symlink():
        (d / "escape.jpg").symlink_to("/etc/hostname")  # inside the folder, pointing out of it
    if not (d / "fifo.jpg").exists():
        os.mkfifo(d / "fifo.jpg")  # opening it to read would block forever
    return good


def jsonl_cases(folder: Path, server) -> list[tuple[bytes, str | None]]:
    photos = images(folder)
    server.files.update(photos)
    good = list(photos)
    ok_img = f"images/{good[0]}.jpg"
    t = "What a lovely morning, I am so happy"
    h = server.url
    img = [  # (image_url, code)
        (ok_img, None),
        ("http://[::1/x", codes.IMAGE_URL_INVALID),
        ("https://[]/", codes.IMAGE_URL_INVALID),
        ("http://[evil]/a.jpg", codes.IMAGE_URL_INVALID),
        (h("/redirect?to=http://[::1"), codes.IMAGE_URL_INVALID),
        ("http://127.0.0.1:1/a\x00b.jpg", codes.IMAGE_URL_INVALID),
        (h("/img/x\r\nHost: evil.example"), codes.IMAGE_URL_INVALID),  # header injection
        ("http://127.0.0.1/" + "a" * 10_000, codes.IMAGE_URL_INVALID),
        ("ftp://127.0.0.1/a.jpg", codes.IMAGE_URL_INVALID),
        (17, codes.IMAGE_URL_INVALID),
        (["a", "list"], codes.IMAGE_URL_INVALID),
        ("/dev/zero", codes.IMAGE_NOT_A_FILE),
        ("/dev/urandom", codes.IMAGE_NOT_A_FILE),
        ("images/fifo.jpg", codes.IMAGE_NOT_A_FILE),
        ("images/folder.jpg", codes.IMAGE_NOT_A_FILE),
        ("images/../../../../../etc/passwd", codes.IMAGE_URL_FORBIDDEN),
        ("images/escape.jpg", codes.IMAGE_URL_FORBIDDEN),
        ("images/bomb.png", codes.IMAGE_TOO_LARGE),
        ("images/icon.ico", codes.IMAGE_FORMAT_UNSUPPORTED),
        ("images/no-such.jpg", codes.IMAGE_NOT_FOUND),
        (h("/trickle-headers?every=0.3"), codes.IMAGE_FETCH_TIMEOUT),
        (h("/trickle-body?n=100000&every=0.01"), codes.IMAGE_FETCH_TIMEOUT),
        (h("/hang"), codes.IMAGE_FETCH_TIMEOUT),
        (h("/gzip-bomb?n=100000000"), codes.IMAGE_BYTES_TOO_LARGE),
        (h("/garbage"), codes.IMAGE_FETCH_ERROR),
        (h("/status/503"), codes.IMAGE_FETCH_ERROR),
        (h("/status/404"), codes.IMAGE_NOT_FOUND),
        (h(f"/img/{good[1]}"), None),
    ]
    cases: list[tuple[bytes, str | None]] = []
    for i, (url, code) in enumerate(img):
        cases.append((_line({"id": f"img-{i}", "text": t, "image_url": url}), code))
    text = [  # (text, code)
        ("\u200b", codes.EMPTY_TEXT),
        ("\x01\x02\x7f", codes.EMPTY_TEXT),
        ("\ufeff", codes.EMPTY_TEXT),
        ("\u202e\u2066\u200d", codes.EMPTY_TEXT),
        ("\ufe0f", codes.EMPTY_TEXT),  # a variation selector alone: no token
        (12, codes.TEXT_INVALID),
        ({"a": 1}, codes.TEXT_INVALID),
        ("x" * 100_000, None),  # long (under the line cap): read in windows
    ]
    for i, (value, code) in enumerate(text):
        cases.append((_line({"id": f"text-{i}", "text": value}), code))
    records = [
        (b"[" * 100_000, codes.INVALID_RECORD),  # RecursionError in json.loads
        (
            b'{"id": "deep", "text": ' + b'{"a": ' * 20_000 + b"1" + b"}" * 20_001,
            codes.INVALID_RECORD,
        ),
        (b'"just a string"', codes.INVALID_RECORD),
        (b'{"id": "nan", "text": NaN}', codes.NO_USABLE_INPUT),
        (b'{"id": "inf", "text": 1e999}', codes.TEXT_INVALID),
        (b'{"id": "bad-escape", "text": "\\ud800"}', codes.TEXT_NOT_UTF8),
        (b'{"id": "latin1", "text": "caf\xe9"}', codes.TEXT_NOT_UTF8),
        (b'{"id": "long-line", "text": "' + b"y" * (CAP + 10) + b'"}', codes.RECORD_TOO_LARGE),
        (b'{"id": 123456789012345678901234567890, "text": "big id"}', None),
        (b'{"text": "no id"}', codes.MISSING_COLUMN),
        (b"\x00\x01\x02 binary junk \xff\xfe", codes.INVALID_RECORD),
        (b'{"id": "ok-after-junk", "text": "still read"}', None),
    ]
    return cases + records


def csv_bytes() -> tuple[bytes, list[str | None]]:
    """A CSV with an unclosed quote in the middle: it costs its own row, not the rest."""
    rows = [
        b"id,text",
        b"c0,fine",
        b'c1,"an unclosed quote',
        b"c2,next row",
        b'c3,"quoted, ok"',
        b"c4,last",
    ]
    return b"\n".join(rows) + b"\n", [None, codes.INVALID_RECORD, None, None, None]


def truncated_gzip() -> tuple[bytes, int]:
    """A .jsonl.gz cut in the middle: the rows before stand, the rest is one input_read_error."""
    body = b"\n".join(_line({"id": f"g{i}", "text": f"post {i}"}) for i in range(2000)) + b"\n"
    data = gzip.compress(body)
    return data[: len(data) // 2], 2000


def parquet_file(path: Path) -> list[str | None]:
    """A Parquet file with a cell over the field cap and odd types; its expected codes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    table = pa.table(
        {
            "id": ["q0", "q1", None, "q3"],
            "text": ["fine", "z" * (CAP + 1), "no id", None],
            "image_url": [None, None, None, b"\x89PNG not really"],
        }
    )
    pq.write_table(table, path)
    return [
        None,
        codes.RECORD_TOO_LARGE,
        codes.MISSING_COLUMN,
        codes.IMAGE_DECODE_ERROR,
    ]  # inline bytes


def write_dump(folder: Path, server) -> dict[str, list[str | None]]:
    """The whole hostile dump under `folder`, but for a truncated .gz (see truncated_gzip);
    {file name: expected error of each row}."""
    folder.mkdir(parents=True, exist_ok=True)
    cases = jsonl_cases(folder, server)
    (folder / "posts.jsonl").write_bytes(b"\n".join(line for line, _ in cases) + b"\n")
    data, expected = csv_bytes()
    (folder / "posts.csv").write_bytes(data)
    return {
        "posts.jsonl": [c for _, c in cases],
        "posts.csv": expected,
        "posts.parquet": parquet_file(folder / "posts.parquet"),
    }
