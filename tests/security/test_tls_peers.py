"""Modbus/TCP Security against a real peer: pymodbus's TLS client with role certificates.

Accepted or refused per role (exception 01, audited with the certificate subject); a client
without a certificate, with an expired one or one from another CA never gets a request
served. Everything on loopback, every wait bounded by the client's timeout."""

from __future__ import annotations

import ssl

import pytest
from pymodbus.client import AsyncModbusTlsClient
from pymodbus.exceptions import ModbusException

from pm4324.protocols.modbus.tcp import TcpServer
from pm4324.protocols.modbus.tls import server_context

TIMEOUT = 3.0
NO_ANSWER_S = 1.0  # how long a refused client waits for the answer that never comes


@pytest.fixture
async def tls_server(pki, guarded):
    async with TcpServer(guarded.backend, port=0, ssl_context=server_context(pki.tls)) as srv:
        yield srv


async def tls_client(server, ctx: ssl.SSLContext) -> AsyncModbusTlsClient:
    client = AsyncModbusTlsClient("127.0.0.1", port=server.port, sslctx=ctx, timeout=TIMEOUT,
                                  retries=0)
    await client.connect()
    return client


@pytest.mark.parametrize(("role", "coil_ok", "ct_ok", "reset_ok"), [
    ("read", False, False, False),
    ("relays", True, False, False),
    ("settings", True, True, False),
    ("energy-reset", False, False, True),
    ("norole", False, False, False),
])
async def test_role_certificates(pki, guarded, tls_server, role, coil_ok, ct_ok, reset_ok):
    client = await tls_client(tls_server, pki.client_context(f"client-{role}"))
    try:
        assert client.connected
        read = await client.read_input_registers(0x1000, count=1, device_id=1)
        assert read.registers == [43240]  # every role reads (PM-4324A model code)
        coil = await client.write_coil(0x1000, True, device_id=1)
        ct = await client.write_register(0x1000, 250, device_id=1)
        reset = await client.write_register(0x1013, 3, device_id=1)
    finally:
        client.close()
    for ok, rsp in ((coil_ok, coil), (ct_ok, ct), (reset_ok, reset)):
        assert rsp.isError() != ok
        if not ok:
            assert rsp.exception_code == 1  # MB-TCP-Security authorization failure
    meter = guarded.meter
    assert meter.relays[0] == coil_ok
    assert (meter.settings.meters[0].ct_ratio == 250) == ct_ok
    assert meter.resets == ([3] if reset_ok else [])
    guarded.audit.flush()
    entries = guarded.audit.entries()
    assert len(entries) == 3
    subject = "no role" if role == "norole" else f"{role} operator"
    assert {(e.interface, e.subject, e.role) for e in entries} == {
        ("modbus-tls", subject, None if role == "norole" else role)}
    assert [e.outcome == "accepted" for e in entries] == [coil_ok, ct_ok, reset_ok]
    assert all(e.address.startswith("127.0.0.1:") for e in entries)


@pytest.mark.parametrize("stem", [None, "client-expired", "client-otherca"])
@pytest.mark.parametrize("max_tls12", [True, False])
async def test_no_valid_certificate_is_refused_at_handshake(pki, guarded, tls_server, stem,
                                                            max_tls12):
    client = AsyncModbusTlsClient("127.0.0.1", port=tls_server.port, sslctx=pki.client_context(
        stem, max_tls12), timeout=NO_ANSWER_S, retries=0)
    try:
        connected = await client.connect()
        if max_tls12:
            assert not connected  # TLS 1.2: the server's alert ends the handshake itself
        else:  # TLS 1.3: the client finishes first; the server's alert closes it before any answer
            with pytest.raises(ModbusException):
                rsp = await client.write_coil(0x1000, True, device_id=1)
                assert rsp.isError()  # pragma: no cover  (never reached: no answer comes)
    finally:
        client.close()
    assert tls_server.connections == 0
    assert guarded.meter.relays == (False, False)
    guarded.audit.flush()
    assert guarded.audit.entries() == []  # no request reached the guard


async def test_plain_modbus_client_on_the_tls_port_gets_nothing(guarded, tls_server):
    from pymodbus.client import AsyncModbusTcpClient

    client = AsyncModbusTcpClient("127.0.0.1", port=tls_server.port, timeout=NO_ANSWER_S,
                                  retries=0)
    try:
        await client.connect()
        with pytest.raises(ModbusException):
            await client.write_coil(0x1000, True, device_id=1)
    finally:
        client.close()
    assert guarded.meter.relays == (False, False)


@pytest.mark.parametrize("max_tls12", [True, False])
async def test_revoked_certificate_is_refused_when_a_crl_is_set(pki, guarded, max_tls12):
    from dataclasses import replace

    tls = replace(pki.tls, crl=str(pki.directory / "crl.pem"))
    async with TcpServer(guarded.backend, port=0, ssl_context=server_context(tls)) as srv:
        good = await tls_client(srv, pki.client_context("client-relays", max_tls12))
        try:
            assert not (await good.write_coil(0x1000, True, device_id=1)).isError()
        finally:
            good.close()
        revoked = AsyncModbusTlsClient("127.0.0.1", port=srv.port, sslctx=pki.client_context(
            "client-revoked", max_tls12), timeout=NO_ANSWER_S, retries=0)
        try:
            connected = await revoked.connect()
            if max_tls12:
                assert not connected
            else:  # TLS 1.3: the client finishes its side first; the alert ends it unanswered
                with pytest.raises(ModbusException):
                    await revoked.write_coil(0x1001, True, device_id=1)
        finally:
            revoked.close()
    assert guarded.meter.relays == (True, False)
    guarded.audit.flush()
    assert [e.subject for e in guarded.audit.entries()] == ["relays operator"]
