"""The fleet's members as the web server's ``web.fleet.Fleet``, read when asked.

The hub pushes every reading into the web server's ``Fleet``; a fleet of 10,000 members
would so build 10,000 snapshots a second (~0.6 ms each) that nobody may look at. This view
builds a member's snapshot only when a request names it (at most once a second per member,
fleet/member.py); /api/fleet and /metrics, which list every member, pay for all of them
per request.
"""

from __future__ import annotations

from collections.abc import Callable

from pm4324.fleet.member import FleetMember
from pm4324.snapshot import Snapshot
from pm4324.web.fleet import Member


class MembersView:
    """``web.fleet.Fleet``'s interface over fleet members."""

    def __init__(self, members: list[FleetMember]):
        self._members = {m.key: m for m in members}

    @property
    def keys(self) -> list[str]:
        return list(self._members)

    def get(self, key: str) -> Member | None:
        m = self._members.get(key)
        return None if m is None else _member(m)

    def members(self) -> list[Member]:
        return [_member(m) for m in self._members.values()]

    def listener(self, key: str) -> Callable[[Snapshot], None]:
        return lambda snap: None

    def update(self, key: str, snap: Snapshot) -> None:
        """Nothing to keep: the member itself has its newest second."""

    def mark(self, key: str, online: bool) -> None:
        """Members are always online (a protocol fault does not take a web member away)."""


def _member(m: FleetMember) -> Member:
    snap = m.snapshot
    if snap.seq < 0:  # the power-up snapshot: no second measured yet
        return Member(m.key, None, None, True)
    return Member(m.key, snap, snap.time, True)
