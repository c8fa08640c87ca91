"""Labels of Meters and CTs ("Shop 3 – lighting") as the history keeps them."""

from __future__ import annotations

from pm4324.config.settings import CTS_PER_METER, Settings


def names_of(settings: Settings) -> dict[str, dict[str, str]]:
    """``{"meters": {"3": "Shop 3"}, "cts": {"7": "Shop 3 – lighting"}}``, labelled ones only."""
    meters, cts = {}, {}
    for m, meter in enumerate(settings.meters, start=1):
        if meter.name:
            meters[str(m)] = meter.name
        for j, label in enumerate(meter.ct_names):
            if label:
                cts[str(CTS_PER_METER * (m - 1) + j + 1)] = label
    return {"meters": meters, "cts": cts}


def label(names: dict, element: str) -> str:
    """The label of ``ct7`` / ``meter3`` / ``main1``, or the bare name ("CT 7")."""
    for kind, group, bare in (("ct", "cts", "CT"), ("meter", "meters", "Meter"), ("main", "", "Main")):
        number = element.removeprefix(kind)
        if number != element and number.isdigit():
            return names.get(group, {}).get(number) or f"{bare} {number}" if group else f"{bare} {number}"
    return element
