"""Who may change the meter: roles, client identities, the one authorization point and the
audit log (docs/security.md).

Every interface (Modbus RTU/TCP/TLS, CANopen, and later HTTP and MQTT) maps a request to a
``Client``; ``Guard.authorize`` decides from the settings' write policy and the client's role,
and every accepted or refused write lands in the ``AuditLog``.
"""

from pm4324.security.audit import AuditEntry, AuditLog
from pm4324.security.guard import Guard, Refused, Write
from pm4324.security.roles import Client, Right

__all__ = ["AuditEntry", "AuditLog", "Client", "Guard", "Refused", "Right", "Write"]
