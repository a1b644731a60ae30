import struct

import numpy as np
import pytest

from craft_vla.data.example_proto import decode_example, encode_example
from craft_vla.data.tfrecord import (
    RecordSpan,
    TFRecordError,
    iter_records,
    masked_crc32c,
    read_record_at,
    write_records,
)


def crc32c_bitwise(data: bytes) -> int:
    """Reference CRC-32C (Castagnoli, reflected polynomial 0x82F63B78), one bit at a time."""
    crc = 0xFFFFFFFF
    for byte in data:
        crc ^= byte
        for _ in range(8):
            crc = (crc >> 1) ^ (0x82F63B78 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFF


def test_masked_crc_matches_reference():
    assert crc32c_bitwise(b"123456789") == 0xE3069283  # the standard check value
    for data in (b"", b"a", b"123456789", bytes(range(256)) * 3):
        crc = crc32c_bitwise(data)
        assert masked_crc32c(data) == (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


def test_write_then_read_records(tmp_path):
    records = [b"first", b"", b"x" * 1000]
    spans = write_records(tmp_path / "f.tfrecord", records)
    raw = (tmp_path / "f.tfrecord").read_bytes()
    assert len(raw) == sum(len(r) + 16 for r in records)
    assert struct.unpack("<Q", raw[:8])[0] == 5 and raw[12:17] == b"first"
    assert [(s, d) for s, d in iter_records(tmp_path / "f.tfrecord")] == list(zip(spans, records))
    import os

    fd = os.open(tmp_path / "f.tfrecord", os.O_RDONLY)
    try:
        assert read_record_at(fd, "f", spans[2]) == records[2]
        with pytest.raises(TFRecordError, match="index says"):
            read_record_at(fd, "f", RecordSpan(spans[2].offset, 999))
    finally:
        os.close(fd)


def test_truncated_and_corrupt_files_name_file_and_offset(tmp_path):
    path = tmp_path / "f.tfrecord"
    write_records(path, [b"a" * 10, b"b" * 50])
    raw = path.read_bytes()
    path.write_bytes(raw[:-20])
    with pytest.raises(TFRecordError, match=rf"{path}: truncated record at byte offset 26"):
        list(iter_records(path))
    path.write_bytes(raw[:-4] + b"\0\0\0\0")
    with pytest.raises(TFRecordError, match=r"corrupt record data at byte offset 26"):
        list(iter_records(path))


def test_example_encoding_matches_hand_assembled_wire_format():
    # Example{features{feature{"a": float_list[1.5]}, feature{"b": bytes_list["hi"]},
    #                  feature{"c": int64_list[1, 0]}}}
    def entry(key: bytes, feature: bytes) -> bytes:
        body = b"\x0a" + bytes([len(key)]) + key + b"\x12" + bytes([len(feature)]) + feature
        return b"\x0a" + bytes([len(body)]) + body

    float_list = b"\x12\x06\x0a\x04" + struct.pack("<f", 1.5)
    bytes_list = b"\x0a\x04\x0a\x02hi"
    int64_list = b"\x1a\x04\x0a\x02\x01\x00"
    features = entry(b"a", float_list) + entry(b"b", bytes_list) + entry(b"c", int64_list)
    expected = b"\x0a" + bytes([len(features)]) + features
    encoded = encode_example({"a": np.array([1.5]), "b": [b"hi"], "c": np.array([True, False])})
    assert encoded == expected
    decoded = decode_example(expected)
    assert decoded["a"].dtype == np.float32 and decoded["a"].tolist() == [1.5]
    assert decoded["b"] == [b"hi"] and decoded["c"].tolist() == [1, 0]


def test_example_rejects_unsupported_values():
    with pytest.raises(TypeError, match="feature 'x'"):
        encode_example({"x": np.array(["text"])})
