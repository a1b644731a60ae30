"""TFRecord framing without TensorFlow.

A TFRecord file is a sequence of records, each framed as
    uint64 length | uint32 masked_crc32c(length bytes) | data[length] | uint32 masked_crc32c(data)
(little endian). The mask is `((crc >> 15) | (crc << 17)) + 0xa282ead8` modulo 2^32. Reading uses
`os.pread` on a file descriptor, so one descriptor can be shared by forked DataLoader workers.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import google_crc32c

HEADER_BYTES = 12
FOOTER_BYTES = 4
_MASK_DELTA = 0xA282EAD8


class TFRecordError(ValueError):
    """A TFRecord file is truncated or corrupt."""


@dataclass(frozen=True)
class RecordSpan:
    """Where one record's data lies in its file: `offset` of the record header, `length` of the data."""

    offset: int
    length: int

    @property
    def end(self) -> int:
        return self.offset + HEADER_BYTES + self.length + FOOTER_BYTES


def masked_crc32c(data: bytes) -> int:
    """TFRecord's masked CRC-32C of `data`."""
    crc = google_crc32c.value(data)
    return (((crc >> 15) | (crc << 17)) + _MASK_DELTA) & 0xFFFFFFFF


def frame_record(data: bytes) -> bytes:
    """The bytes of one framed record holding `data`."""
    length = struct.pack("<Q", len(data))
    return length + struct.pack("<I", masked_crc32c(length)) + data + struct.pack("<I", masked_crc32c(data))


def _parse_header(header: bytes, path: str | os.PathLike, offset: int, verify: bool) -> int:
    length_bytes, (length_crc,) = header[:8], struct.unpack("<I", header[8:])
    if verify and masked_crc32c(length_bytes) != length_crc:
        raise TFRecordError(
            f"{path}: corrupt record header at byte offset {offset} (length checksum mismatch)"
        )
    return struct.unpack("<Q", length_bytes)[0]


def read_record_at(fd: int, path: str | os.PathLike, span: RecordSpan, verify: bool = True) -> bytes:
    """Read the data of the record described by `span` from the open descriptor `fd`."""
    raw = os.pread(fd, span.end - span.offset, span.offset)
    if len(raw) < span.end - span.offset:
        raise TFRecordError(
            f"{path}: truncated record at byte offset {span.offset}: expected {span.end - span.offset} "
            f"bytes, the file has {len(raw)} left (the shard was cut short; re-download or regenerate it)"
        )
    length = _parse_header(raw[:HEADER_BYTES], path, span.offset, verify)
    if length != span.length:
        raise TFRecordError(
            f"{path}: record at byte offset {span.offset} has length {length}, the index says {span.length} "
            "(the file changed since it was indexed; delete the index cache to rebuild it)"
        )
    data = raw[HEADER_BYTES : HEADER_BYTES + length]
    if verify and masked_crc32c(data) != struct.unpack("<I", raw[HEADER_BYTES + length :])[0]:
        raise TFRecordError(
            f"{path}: corrupt record data at byte offset {span.offset} (data checksum mismatch)"
        )
    return data


def iter_records(path: str | os.PathLike, verify: bool = True) -> Iterator[tuple[RecordSpan, bytes]]:
    """Yield (span, data) for every record of the file, in order; raise on truncation or corruption."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        offset = 0
        while offset < size:
            header = f.read(HEADER_BYTES)
            if len(header) < HEADER_BYTES:
                raise TFRecordError(
                    f"{path}: truncated record header at byte offset {offset}: {len(header)} of "
                    f"{HEADER_BYTES} bytes (the shard was cut short; re-download or regenerate it)"
                )
            length = _parse_header(header, path, offset, verify)
            span = RecordSpan(offset, length)
            rest = f.read(length + FOOTER_BYTES)
            if len(rest) < length + FOOTER_BYTES:
                raise TFRecordError(
                    f"{path}: truncated record at byte offset {offset}: expected {length + FOOTER_BYTES} "
                    f"bytes after the header, found {len(rest)} "
                    "(the shard was cut short; re-download or regenerate it)"
                )
            data = rest[:length]
            if verify and masked_crc32c(data) != struct.unpack("<I", rest[length:])[0]:
                raise TFRecordError(
                    f"{path}: corrupt record data at byte offset {offset} (data checksum mismatch)"
                )
            yield span, data
            offset = span.end


def write_records(path: str | os.PathLike, records: Iterable[bytes]) -> list[RecordSpan]:
    """Write `records` to `path` atomically (a temporary file, then rename); return their spans."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    spans, offset = [], 0
    try:
        with open(tmp, "wb") as f:
            for data in records:
                f.write(frame_record(data))
                spans.append(RecordSpan(offset, len(data)))
                offset = spans[-1].end
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
    return spans
