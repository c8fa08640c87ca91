"""The history of one or many meters: ten years of trends, demand and exact energy.

Writing (``run`` and ``hub`` do this)::

    store = HistoryStore.open("history.sqlite", time_zone="Europe/Berlin")   # or postgresql://...
    writer = HistoryWriter(store, "local", model="PM-4324A", names=names_of(settings))
    writer.add_snapshot(snap)      # every second (a remote meter: writer.add_dict(d))
    writer.close()                 # flushes; flushes also happen once a minute by themselves

Reading (the web dashboard, ``pm4324 history``, billing)::

    m = store.find_meter("local")
    query.trend(store, m, "ct7", "p_w", start, end, resolution="auto", max_points=2000)
    query.energy(store, m, "meter3", date(2026, 3, 1), date(2026, 3, 31), period="day")
    query.energy(store, m, "meter3", date(2026, 1, 1), date(2026, 12, 31), period="month")
    query.demand(store, m, None, start, end)          # 15-min kW/kvar/kVA of all CTs and Meters
    query.max_demand(store, m, "meter1", first, last, period="month")
    query.gaps(store, m, start, end); query.events(store, m, start, end)
    store.meters()                                    # ids, keys, models, names

Resolutions and retention: 1-second raw values of P, Q, S, I and the phase voltages for
``raw_days`` (7); 1-minute means of P, Q, S, I (V per main phase) with min/max of P and I,
and 15-minute mean/min/max of every quantity with the energy registers and the energy in the
interval, for ``keep_years`` (10); energy per local day, from which months are summed.
docs/history.md describes the tables, the crash guarantees and the measured sizes and speeds.
"""

from pm4324.history import query
from pm4324.history.db import HistoryError
from pm4324.history.layout import ELEMENTS, QUANTITIES, REGISTERS, Frame
from pm4324.history.names import names_of
from pm4324.history.store import HistoryStore
from pm4324.history.writer import HistoryWriter

__all__ = ["ELEMENTS", "QUANTITIES", "REGISTERS", "Frame", "HistoryError", "HistoryStore",
           "HistoryWriter", "names_of", "query"]
