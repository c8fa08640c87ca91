"""Golden frames for the sans-IO request handler: request PDU -> exact response PDU."""

from __future__ import annotations

import logging

import pytest

from pm4324.protocols.modbus.pdu import handle_pdu, request_pdu_length


def h(text: str) -> bytes:
    return bytes.fromhex(text.replace(" ", ""))


def dev_obj(oid: int, value: bytes) -> str:
    return f"{oid:02x} {len(value):02x} " + value.hex()


GOLDEN = [
    # FC04 input registers (value = 1000 + address)
    ("04 0000 0002", "04 04 03e8 03e9"),
    ("04 012b 0001", "04 02 0513"),
    ("04 0000 007d", "04 fa " + "".join(f"{1000 + a:04x}" for a in range(125))),
    ("04 0000 007e", "84 03"),  # 126 registers: over the limit
    ("04 0000 0000", "84 03"),  # zero quantity
    ("04 012c 0001", "84 02"),  # 300: unmapped
    ("04 012b 0002", "84 02"),  # 299..300: only partly mapped
    ("04 ffff 0002", "84 02"),  # runs past 0xFFFF
    ("04 0000 00", "84 03"),  # truncated PDU
    # FC03 holding registers (value = address)
    ("03 0000 0003", "03 06 0000 0001 0002"),
    ("03 0064 0002", "03 04 0064 0065"),
    ("03 00c8 0001", "83 04"),  # backend bug -> 04, logged
    ("03 0000 0080", "83 03"),
    # FC01 coils (all off), FC02 discrete inputs (odd addresses on)
    ("01 0000 000a", "01 02 0000"),
    ("01 1000 0002", "01 01 00"),
    ("02 0000 000a", "02 02 aa 02"),
    ("02 0001 0001", "02 01 01"),
    ("01 0000 07d1", "81 03"),  # 2001 bits
    ("01 0000 07d0", "81 02"),  # 2000 bits, not mapped
    ("02 0000 0000", "82 03"),
    # FC05 write single coil
    ("05 0001 ff00", "05 0001 ff00"),
    ("05 0001 0000", "05 0001 0000"),
    ("05 0001 1234", "85 03"),  # value must be 0x0000 or 0xFF00
    ("05 0200 ff00", "85 02"),
    ("05 0200 1234", "85 03"),  # value checked before address (quantity stage)
    # FC06 write single register
    ("06 0005 1234", "06 0005 1234"),
    ("06 0064 0001", "86 02"),  # read-only register
    ("06 0032 03e9", "86 03"),  # value refused by the map
    ("06 00c8 0000", "86 04"),
    # FC0F write multiple coils
    ("0f 0000 000a 02 ff03", "0f 0000 000a"),
    ("0f 0000 000a 01 ff", "8f 03"),  # byte count does not match quantity
    ("0f 0000 000a 02 ff", "8f 03"),  # fewer data bytes than the byte count
    ("0f 0000 07b1 f7" + "00" * 247, "8f 03"),  # 1969 bits
    ("0f 0000 0000 00", "8f 03"),
    ("0f 0060 0008 01 ff", "8f 02"),  # 0x60..0x67: partly mapped
    # FC10 write multiple registers
    ("10 0000 0002 04 000a 000b", "10 0000 0002"),
    ("10 0000 0002 03 000a 00", "90 03"),
    ("10 0000 007c f8" + "00" * 248, "90 03"),  # 124 registers
    ("10 0000 0000 00", "90 03"),
    ("10 0063 0002 04 0001 0002", "90 02"),  # 99 writable, 100 read-only
    ("10 fffe 0004 08 0000000000000000", "90 02"),  # past 0xFFFF
    # unsupported function codes
    ("07", "87 01"),
    ("08 0000 1234", "88 01"),
    ("41 0102", "c1 01"),
    ("2b 0d 00 00", "ab 01"),  # MEI type 0x0D (CANopen) is not implemented
    # FC 2B/0E read device identification
    ("2b 0e 05 00", "ab 03"),  # read device id code 5: invalid
    ("2b 0e 04 06", "ab 02"),  # individual access to an object we do not have
    ("2b 0e 01", "ab 03"),  # truncated
    (
        "2b 0e 01 00",
        "2b 0e 01 82 00 00 03 "
        + dev_obj(0, b"ICP DAS") + dev_obj(1, b"PM-4324") + dev_obj(2, b"1.05"),
    ),
    ("2b 0e 04 01", "2b 0e 04 82 00 00 01 " + dev_obj(1, b"PM-4324")),
    (
        "2b 0e 02 04",
        "2b 0e 02 82 00 00 02 " + dev_obj(4, b"PM-4324 software meter") + dev_obj(5, b"PM-4324-MTCP"),
    ),
    (
        "2b 0e 01 07",  # unknown object id: the stream restarts at object 0
        "2b 0e 01 82 00 00 03 "
        + dev_obj(0, b"ICP DAS") + dev_obj(1, b"PM-4324") + dev_obj(2, b"1.05"),
    ),
]


@pytest.mark.parametrize(("request_hex", "response_hex"), GOLDEN)
def test_golden(backend, request_hex: str, response_hex: str) -> None:
    assert handle_pdu(backend, h(request_hex)) == h(response_hex)


@pytest.mark.parametrize("request_hex", ["", "00", "80", "84 0000 0001", "ff"])
def test_no_answer_for_invalid_function_codes(backend, request_hex: str) -> None:
    assert handle_pdu(backend, h(request_hex)) is None


def test_writes_reach_the_backend(backend) -> None:
    handle_pdu(backend, h("0f 0000 000a 02 0503"))
    assert [backend.coils[a] for a in range(10)] == [
        True, False, True, False, False, False, False, False, True, True,
    ]
    handle_pdu(backend, h("10 0003 0002 04 abcd 0102"))
    assert (backend.holding[3], backend.holding[4]) == (0xABCD, 0x0102)


def test_refused_requests_never_reach_the_backend(backend) -> None:
    for req in ("04 0000 007e", "05 0001 1234", "10 0000 0002 03 000a 00", "07"):
        handle_pdu(backend, h(req))
    assert backend.reads == 0 and backend.writes == []


def test_unexpected_backend_error_is_logged_with_traceback(backend, caplog) -> None:
    with caplog.at_level(logging.ERROR, logger="pm4324.protocols.modbus.pdu"):
        assert handle_pdu(backend, h("03 00c8 0001")) == h("83 04")
    (record,) = caplog.records
    assert record.exc_info is not None and "simulated backend bug" in str(record.exc_info[1])


def test_register_value_out_of_range_from_backend_is_04(backend, caplog) -> None:
    backend.input[0] = 70000
    with caplog.at_level(logging.ERROR):
        assert handle_pdu(backend, h("04 0000 0001")) == h("84 04")
    assert caplog.records


def test_wrong_count_from_backend_is_04(backend, caplog) -> None:
    backend.read_registers = lambda table, address, count: [0] * (count - 1)
    with caplog.at_level(logging.ERROR):
        assert handle_pdu(backend, h("03 0000 0002")) == h("83 04")


def test_device_identification_more_follows(backend) -> None:
    backend.device_id = {0: b"V" * 100, 1: b"P" * 100, 2: b"R" * 100, 3: b"U" * 10}
    rsp = handle_pdu(backend, h("2b 0e 03 00"))
    # 7 header bytes + 2 objects of 102 bytes fit in 253; the third does not.
    assert rsp[:7] == h("2b 0e 03 82 ff 02 02")
    assert len(rsp) == 7 + 2 * 102
    rsp = handle_pdu(backend, h("2b 0e 03 02"))
    assert rsp == h("2b 0e 03 82 00 00 02 ") + h(dev_obj(2, b"R" * 100) + dev_obj(3, b"U" * 10))


def test_device_identification_conformity_levels(backend) -> None:
    backend.device_id = {0: b"a", 1: b"b", 2: b"c"}
    assert handle_pdu(backend, h("2b 0e 01 00"))[3] == 0x81
    backend.device_id[0x80] = b"x"
    assert handle_pdu(backend, h("2b 0e 03 00"))[3] == 0x83
    assert handle_pdu(backend, h("2b 0e 04 80")) == h("2b 0e 04 83 00 00 01 80 01") + b"x"


def test_device_identification_oversized_object_is_truncated(backend) -> None:
    backend.device_id = {0: b"x" * 400, 1: b"b", 2: b"c"}
    rsp = handle_pdu(backend, h("2b 0e 04 00"))
    assert len(rsp) == 253 and rsp[8] == 244


@pytest.mark.parametrize(
    ("pdu_hex", "expected"),
    [
        ("", 0),
        ("03", 5),
        ("10 0000 0002", 0),
        ("10 0000 0002 04", 10),
        ("0f 0000 000a 02", 8),
        ("2b", 0),
        ("2b 0e", 4),
        ("2b 0d", None),
        ("41", None),
        ("17 0000 0001 0000 0001", 0),
        ("17 0000 0001 0000 0001 02", 12),
    ],
)
def test_request_pdu_length(pdu_hex: str, expected: int | None) -> None:
    assert request_pdu_length(h(pdu_hex)) == expected
