"""An invoice as a one- or two-page A4 PDF (reportlab): lines, the counter readings they came
from, notes (gaps, resets, occupancy, DST) and a load-profile chart of the period."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing, String
from reportlab.lib import colors
from reportlab.lib.pagesizes import A4
from reportlab.lib.styles import getSampleStyleSheet
from reportlab.lib.units import mm
from reportlab.platypus import Paragraph, SimpleDocTemplate, Spacer, Table, TableStyle

from pm4324.billing.invoice import Invoice

_STYLES = getSampleStyleSheet()
_GRID = TableStyle([("FONT", (0, 0), (-1, -1), "Helvetica", 8),
                    ("FONT", (0, 0), (-1, 0), "Helvetica-Bold", 8),
                    ("LINEBELOW", (0, 0), (-1, 0), 0.5, colors.black),
                    ("ALIGN", (2, 0), (-1, -1), "RIGHT"),
                    ("VALIGN", (0, 0), (-1, -1), "TOP")])


def _text(s: str) -> str:
    """Helvetica has no Σ or −: spell them."""
    return s.replace("Σ", "sum").replace("−", "-").replace("×", "x")


def write_pdf(inv: Invoice, building_name: str, tz, path: str | Path) -> None:
    doc = SimpleDocTemplate(str(path), pagesize=A4, leftMargin=16 * mm, rightMargin=16 * mm,
                            topMargin=14 * mm, bottomMargin=14 * mm,
                            title=f"Invoice {inv.tenant.id} {inv.period}", author=building_name)
    cur = inv.tariff.currency
    story = [Paragraph(f"{building_name}: electricity invoice {inv.period}", _STYLES["Title"]),
             Paragraph(f"<b>{inv.tenant.name}</b> ({inv.tenant.id}) {inv.tenant.address}", _STYLES["Normal"]),
             Paragraph(f"Period {_local(inv.start, tz)} .. {_local(inv.end, tz)} ({inv.hours:g} h), "
                       f"occupied {_local(inv.occupied_from, tz)} .. {_local(inv.occupied_to, tz)}; "
                       f"tariff {inv.tariff.name}; own {inv.own_kwh} kWh, common share {inv.common_kwh} kWh",
                       _STYLES["Normal"]),
             Spacer(1, 4 * mm)]
    rows = [["Item", "Quantity", "Price", f"Amount {cur}"]]
    items = [x for x in inv.lines if x.kind != "tax"]
    taxes = [x for x in inv.lines if x.kind == "tax"]
    for x in items:
        rows.append(_row(x))
    rows.append(["Subtotal", "", "", str(inv.subtotal)])
    rows += [_row(x) for x in taxes]
    rows.append(["Total", "", "", f"{inv.total} {cur}"])
    table = Table(rows, colWidths=[95 * mm, 32 * mm, 20 * mm, 30 * mm])
    table.setStyle(_GRID)
    table.setStyle(TableStyle([("FONT", (0, -1), (-1, -1), "Helvetica-Bold", 9),
                               ("LINEABOVE", (0, len(items) + 1), (-1, len(items) + 1), 0.5,
                                colors.black)]))
    story += [table, Spacer(1, 4 * mm), _chart(inv), Spacer(1, 3 * mm)]
    story.append(Paragraph("Counter readings (import active energy)", _STYLES["Heading4"]))
    rrows = [["Circuit", "Register", "Start", "End", "kWh billed"]]
    for u in inv.circuits:
        start = f"{u.start.value_wh / 1000:.3f} @ {_local(u.start.time, tz)}" if u.start else "-"
        end = f"{u.end.value_wh / 1000:.3f} @ {_local(u.end.time, tz)}" if u.end else "-"
        share = "" if u.circuit.share == 1 else f" x {u.circuit.share}"
        rrows.append([f"{u.start.meter if u.start else ''} {u.circuit.element} {share}",
                      u.start.register if u.start else "", start, end, f"{u.energy_wh / 1000:.3f}"])
    rt = Table(rrows, colWidths=[28 * mm, 50 * mm, 40 * mm, 40 * mm, 20 * mm])
    rt.setStyle(_GRID)
    story += [rt, Spacer(1, 3 * mm)]
    demand = [x for x in inv.lines if x.kind == "demand" and x.readings]
    for x in demand:
        refs = "; ".join(f"{r.element} {r.value_wh / 1000:.3f} kWh @ {_local(r.time, tz)}"
                         for r in x.readings)
        story.append(Paragraph(f"Demand interval readings: {refs}", _STYLES["BodyText"]))
    story.append(Paragraph("Notes", _STYLES["Heading4"]))
    rule = f"{inv.tariff.rounding.replace('_', ' ')} to {inv.tariff.quantum} {cur} per line"
    for n in [f"Money in {cur}, rounded {rule}; taxes on the rounded subtotal.", *inv.notes]:
        story.append(Paragraph(_text(n), _STYLES["BodyText"]))
    doc.build(story)


def _row(x) -> list:
    q = "" if x.quantity is None else f"{x.quantity} {x.unit}"
    return [Paragraph(_text(x.text), _STYLES["BodyText"]), q, "" if x.price is None else str(x.price),
            str(x.amount)]


def _chart(inv: Invoice) -> Drawing:
    """Each hour's highest 15-minute kW over the period (own + common share), days on x
    (hours, not quarter hours: a month of points is wider than the page, and a quarter of
    the drawing time)."""
    w, h = 175 * mm, 55 * mm
    d = Drawing(w, h)
    quarters = inv.profile_kw
    n = len(quarters) // 4 * 4
    with np.errstate(invalid="ignore"):
        kw = np.fmax.reduce(quarters[:n].reshape(-1, 4), axis=1) if n else quarters[:0]
    x = np.arange(len(kw)) / 24.0
    ok = np.isfinite(kw)
    segments, cur = [], []
    for xi, yi, good in zip(x.tolist(), kw.tolist(), ok.tolist()):
        if good:
            cur.append((xi, yi))
        elif cur:
            segments.append(cur)
            cur = []
    if cur:
        segments.append(cur)
    d.add(String(0, h - 9, "Load profile: each hour's highest 15-minute kW (x: days since the "
                 "period's start)",
                 fontName="Helvetica-Bold", fontSize=8))
    if not segments:
        return d
    plot = LinePlot()
    plot.x, plot.y, plot.width, plot.height = 28, 18, w - 40, h - 34
    plot.data = segments
    for n in range(len(segments)):
        plot.lines[n].strokeColor = colors.HexColor("#1f5fa8")
        plot.lines[n].strokeWidth = 0.4
    plot.xValueAxis.valueMin, plot.xValueAxis.valueMax = 0, len(quarters) / 96.0
    plot.xValueAxis.valueStep = 5
    plot.yValueAxis.valueMin = 0
    plot.yValueAxis.valueMax = max(1.0, float(np.nanmax(kw)) * 1.15)  # headroom above the peak
    for axis in (plot.xValueAxis, plot.yValueAxis):
        axis.labels.fontName, axis.labels.fontSize = "Helvetica", 7
    d.add(plot)
    return d


def _local(t: float, tz) -> str:
    return datetime.fromtimestamp(t, tz).strftime("%Y-%m-%d %H:%M")
