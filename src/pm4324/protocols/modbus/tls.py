"""Modbus/TCP Security (MB-TCP-Security): the TLS context of the listener, and who a peer is.

The listener itself is ``TcpServer`` with this context (tcp.py): the MBAP framing inside
TLS is plain Modbus/TCP. What this module adds:

* ``server_context``: TLS 1.2 or newer only, the client must present a certificate that
  chains to the configured CA and is not on its CRL, if one is configured (mutual
  authentication: a client without one fails the handshake), no renegotiation, no
  compression, no session tickets;
* ``client_of``: the ``Client`` behind a transport: address, and for TLS the certificate
  subject and role (extension 1.3.6.1.4.1.50316.802.1, read with ``cryptography`` from the
  DER: Python's ``getpeercert()`` without ``binary_form`` hides unknown extensions).

The handshake has a deadline (``HANDSHAKE_TIMEOUT_S``): a peer that connects and sends
nothing, or a slow trickle, holds a slot only that long.
"""

from __future__ import annotations

import asyncio
import ssl

from pm4324.config.security_settings import TlsSettings
from pm4324.security.identities import peer_identity
from pm4324.security.roles import MODBUS_TCP, MODBUS_TLS, Client, peer_address

HANDSHAKE_TIMEOUT_S = 10.0


def server_context(tls: TlsSettings) -> ssl.SSLContext:
    """The listener's context from ``[security.tls]`` (raises OSError/ssl.SSLError on bad files)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.verify_mode = ssl.CERT_REQUIRED
    ctx.options |= ssl.OP_NO_RENEGOTIATION | ssl.OP_NO_COMPRESSION | ssl.OP_NO_TICKET
    ctx.load_cert_chain(tls.certificate, tls.key)
    ctx.load_verify_locations(cafile=tls.ca)
    if tls.crl:  # a lost or withdrawn client certificate is refused at the handshake
        ctx.load_verify_locations(cafile=tls.crl)
        ctx.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    return ctx


def client_of(transport: asyncio.BaseTransport) -> Client:
    """Who is at the other end of a (TLS or plain) Modbus/TCP connection."""
    address = peer_address(transport.get_extra_info("peername"))
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return Client(MODBUS_TCP, address)
    subject, role = peer_identity(ssl_object.getpeercert(binary_form=True))
    return Client(MODBUS_TLS, address, subject, role)
