"""Which wiring explains each CT's readings.

Per CT the meter gives P and Q1 against the voltage of its element; their angle phi (positive:
the current lags) is the current's angle behind that voltage. A hypothesis "the CT carries
the current of the circuit on phase p, read with sign s" puts the circuit's own load angle at

    phi_p,s = angle(V_p) - (angle(V_element) - phi) + (180 deg if s = -1)

for a balanced, positive-sequence supply. The circuit's declared ``direction`` and PF range
(``[cts.N]``; default 0.7 lagging ... 0.95 leading, import) say which load angles are
plausible (with ``TOLERANCE_DEG`` of slack); the wiring as configured (phase as set, s = +1)
is "ok" when it is plausible. Otherwise the one plausible hypothesis is the verdict (reversed,
on phase p, or both), and several are "ambiguous", each reading stated. Hypotheses are 60 deg
apart at the closest (reversed on a neighbouring phase), the default range is 64 deg wide:
near its edges a correct CT can also read as a reversed one on another phase; the check then
says "ok" and names the other reading.

Per main, a phase whose voltage is below ``VOLTAGE_MISSING`` of nominal is "missing" (its CTs
cannot be checked); a permutation of the voltage inputs that makes more CTs plausible than
the inputs as wired is reported as swapped voltage inputs (a fix no setting makes).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

import numpy as np

from pm4324.config.settings import PHASES, Settings, Wiring
from pm4324.snapshot import Snapshot

TOLERANCE_DEG = 5.0  # slack on the PF range (measurement, unbalance)
NOISE_FLOOR = 0.001  # of the CT's rated current: below, the CT is open or unused
ANGLE_FLOOR = 0.01  # of the rated current: below, too little current to judge the angle
OVERLOAD = 1.2  # of the rated current
DISTORTED_THD = 25.0  # % THD of the current worth a note
VOLTAGE_MISSING = 0.5  # of the nominal phase voltage
PHASE_DEG = {"a": 0.0, "b": -120.0, "c": 120.0}
PHASE_WIRINGS = (Wiring.W3P4W_3CT, Wiring.W1P2W_1CT)  # CTs whose phase a setting can name
ALARMS = ("reversed", "wrong_phase", "ambiguous", "unexpected", "no_voltage")


@dataclass(frozen=True)
class Reading:
    """One CT's averages over the seconds checked (primary units)."""

    v: float
    i: float
    p: float
    q: float
    thd_i: float


@dataclass(frozen=True)
class Hypothesis:
    phase: str
    reversed: bool  # relative to how the meter reads it now
    angle_deg: float  # the circuit's load angle under this hypothesis (+: lagging)

    def pf_words(self) -> str:
        return pf_words(self.angle_deg - (180.0 if _exporting(self.angle_deg) else 0.0))


@dataclass(frozen=True)
class CtVerdict:
    ct: int
    status: str  # ok, reversed, wrong_phase, ambiguous, open, low, unexpected, no_voltage, unused
    text: str  # one plain sentence
    fix: list[str] = field(default_factory=list)  # settings lines that fix it, if any
    readings: list[str] = field(default_factory=list)  # the plausible readings, in words
    p_w: float = math.nan
    i_a: float = math.nan
    angle_deg: float = math.nan  # of the current behind its element voltage, as measured
    angles_to_phases: dict[str, float] = field(default_factory=dict)  # I behind V_a, V_b, V_c


@dataclass(frozen=True)
class MainVerdict:
    main: int
    status: str  # ok, phase_missing, inputs_swapped
    text: str


@dataclass(frozen=True)
class WiringReport:
    seconds: int
    mains: list[MainVerdict]
    cts: list[CtVerdict]

    @property
    def problems(self) -> int:
        """Wiring faults found: CTs reversed, on a wrong phase, ambiguous, unexpected or
        without voltage, and mains not ok (CTs open or with little current are reported,
        not counted: an unused input reads the same)."""
        return sum(c.status in ALARMS for c in self.cts) + sum(m.status != "ok" for m in self.mains)

    def to_dict(self) -> dict:
        return {"seconds": self.seconds, "problems": self.problems,
                "mains": [asdict(m) for m in self.mains], "cts": [asdict(c) for c in self.cts]}


def pf_words(angle_deg: float) -> str:
    """'PF 0.86 lagging' for a load angle (+: the current lags)."""
    a = _wrap(angle_deg)
    pf = abs(math.cos(math.radians(a)))
    if pf > 0.9995:
        return "PF 1.00"
    return f"PF {pf:.2f} {'lagging' if a > 0 else 'leading'}"


def _wrap(deg: float) -> float:
    return (deg + 180.0) % 360.0 - 180.0


def _exporting(angle_deg: float) -> bool:
    return abs(_wrap(angle_deg)) > 90.0


def readings_of(snaps: Sequence[Snapshot]) -> tuple[list[Reading], np.ndarray]:
    """Per-CT means over the snapshots, and the mains' phase voltages (n_mains, 3)."""
    good = [s for s in snaps if s.seq >= 0] or list(snaps)
    ct = {q: np.nanmean([getattr(s.ct, q) for s in good], axis=0)
          for q in ("v_rms", "i_rms", "p_w", "q_var", "thd_i_pct")}
    rows = [Reading(*(float(ct[q][k]) for q in ("v_rms", "i_rms", "p_w", "q_var", "thd_i_pct")))
            for k in range(len(ct["v_rms"]))]
    return rows, np.nanmean([s.main.v_ln for s in good], axis=0)


def _element_deg(wiring: Wiring, pos: int, phase: str) -> float:
    """Angle of a CT's element voltage, for a balanced positive-sequence supply."""
    if wiring is Wiring.W3P3W_2CT:
        return PHASE_DEG[phase] + (30.0 if pos == 0 else -30.0)  # vab, vcb
    return PHASE_DEG[phase]


def hypotheses(r: Reading, element_deg: float, phases: Sequence[str]) -> list[Hypothesis]:
    """Every (phase, sign) reading of this CT whose element voltage is at ``element_deg``."""
    phi = math.degrees(math.atan2(r.q, r.p))
    return [Hypothesis(p, rev, _wrap(PHASE_DEG[p] - (element_deg - phi) + (180.0 if rev else 0.0)))
            for p in phases for rev in (False, True)]


def plausible(h: Hypothesis, direction: str, lag_min: float, lead_min: float) -> bool:
    lag, lead = math.degrees(math.acos(lag_min)), math.degrees(math.acos(lead_min))
    lo, hi = -lead - TOLERANCE_DEG, lag + TOLERANCE_DEG
    imp = lo <= h.angle_deg <= hi
    exp = lo <= _wrap(h.angle_deg - 180.0) <= hi
    return {"import": imp, "export": exp, "both": imp or exp}[direction]


@dataclass(frozen=True)
class _Ct:
    """What the check knows of one CT from the settings."""

    k: int
    main: int  # 0-based
    wiring: Wiring
    pos: int
    phase: str  # as configured
    reverse: bool
    rated: float
    direction: str
    lag_min: float
    lead_min: float

    def element_deg(self, real: dict[str, str] | None = None) -> float:
        """Its element voltage's angle; ``real``: the phase each voltage input carries."""
        return _element_deg(self.wiring, self.pos, (real or {}).get(self.phase, self.phase))

    @property
    def phases(self) -> tuple[str, ...]:
        """Phases it could be on: split-phase (1P3W-2CT) legs are checked for sign only."""
        return (self.phase,) if self.wiring is Wiring.W1P3W_2CT else PHASES

    def fits(self, h: Hypothesis) -> bool:
        return plausible(h, self.direction, self.lag_min, self.lead_min)


def _cts(settings: Settings) -> list[_Ct]:
    out = []
    for k in range(1, 3 * len(settings.meters) + 1):
        meter, pos = settings.meters[(k - 1) // 3], (k - 1) % 3
        phase = meter.circuit_phases[pos] if meter.wiring in PHASE_WIRINGS else PHASES[pos]
        c = settings.cts[k - 1]
        out.append(_Ct(k, settings.main_of_ct(k), meter.wiring, pos, phase,
                       meter.ct_reverse[pos], meter.rated_current_a, c.direction,
                       c.pf_lagging_min, c.pf_leading_min))
    return out


def _kw(p: float) -> str:
    return f"P {p / 1000:.2f} kW"


def _reading_words(ct: _Ct, h: Hypothesis) -> str:
    what = []
    if h.reversed:
        what.append("reversed")
    if h.phase != ct.phase:
        what.append(f"on phase {h.phase}")
    flow = "exporting" if _exporting(h.angle_deg) else "importing"
    return f"{' and '.join(what) or 'as wired'} ({flow} at {h.pf_words()})"


def _fixes(ct: _Ct, h: Hypothesis) -> list[str]:
    fix = []
    if h.reversed:
        fix.append(f"[cts.{ct.k}] reverse = {'false' if ct.reverse else 'true'}")
    if h.phase != ct.phase:
        if ct.wiring in PHASE_WIRINGS:
            fix.append(f'[cts.{ct.k}] phase = "{h.phase}"')
        else:
            fix.append(f"move CT{ct.k} to phase {ct.phase}'s conductor (wiring "
                       f"{ct.wiring.value} fixes each CT's phase: no setting can)")
    return fix


def _verdict(ct: _Ct, r: Reading, missing: set[str], real: dict[str, str] | None = None
             ) -> CtVerdict:
    phi = math.degrees(math.atan2(r.q, r.p))
    base = {"p_w": r.p, "i_a": r.i, "angle_deg": phi}
    i_behind = {p: _wrap(PHASE_DEG[p] - (ct.element_deg(real) - phi)) for p in PHASES}
    base["angles_to_phases"] = i_behind
    if ct.phase in missing or (ct.wiring is Wiring.W3P3W_2CT and "b" in missing):
        return CtVerdict(ct.k, "no_voltage", f"CT{ct.k} cannot be checked: its voltage (phase "
                         f"{ct.phase} of main {ct.main + 1}) is missing", **base)
    if not r.i >= NOISE_FLOOR * ct.rated:
        return CtVerdict(ct.k, "open", f"CT{ct.k} open or unused (I = {r.i:.3g} A, below the "
                         f"noise floor of {NOISE_FLOOR * ct.rated:.3g} A for its "
                         f"{ct.rated:g} A rating; or its load is off)", **base)
    notes = _notes(ct, r)
    if r.i < ANGLE_FLOOR * ct.rated:
        return CtVerdict(ct.k, "low", f"CT{ct.k} carries too little current to check its "
                         f"phase (I = {r.i:.3g} A, {100 * r.i / ct.rated:.2g} % of its rating): "
                         "check again under load" + notes, **base)
    hyps = hypotheses(r, ct.element_deg(real), ct.phases)
    conf = next(h for h in hyps if h.phase == ct.phase and not h.reversed)
    fitting = [h for h in hyps if ct.fits(h)]
    words = [_reading_words(ct, h) for h in fitting]
    s_va = math.hypot(r.p, r.q)
    where = f"{_kw(r.p)} at PF {abs(r.p) / s_va if s_va else 0:.2f} as wired"
    if conf in fitting:
        also = [w for h, w in zip(fitting, words) if h != conf]
        text = f"CT{ct.k} ok ({_kw(r.p)} at {conf.pf_words()} on phase {ct.phase})"
        if also:
            text += "; the readings would also fit it " + " or ".join(also)
        return CtVerdict(ct.k, "ok", text + notes, readings=words, **base)
    if len(fitting) == 1:
        h = fitting[0]
        fix = _fixes(ct, h)
        if h.reversed and h.phase == ct.phase:
            status, what = "reversed", f"CT{ct.k} reversed ({where})"
        elif not h.reversed:
            status = "wrong_phase"
            what = (f"CT{ct.k} on phase {h.phase}, configured as {ct.phase} "
                    f"({abs(_wrap(PHASE_DEG[h.phase] - PHASE_DEG[ct.phase])):.0f}° off; {where})")
        else:
            status = "wrong_phase"
            what = f"CT{ct.k} reversed and on phase {h.phase}, configured as {ct.phase} ({where})"
        how = "swap its leads or set " if h.reversed and h.phase == ct.phase else "fix: "
        return CtVerdict(ct.k, status, f"{what}; {how}{'; '.join(fix)}" + notes, fix=fix,
                         readings=words, **base)
    if fitting:
        text = (f"CT{ct.k} ambiguous ({where}): it is either " + ", or ".join(words)
                + "; check it on site")
        fix = [" and ".join(_fixes(ct, h)) or "nothing (as wired)" for h in fitting]
        return CtVerdict(ct.k, "ambiguous", text + notes, fix=fix, readings=words, **base)
    return CtVerdict(ct.k, "unexpected", f"CT{ct.k} fits no expected reading ({where}): check "
                     f"its circuit's [cts.{ct.k}] direction ({ct.direction}) and PF range, or "
                     "the wiring" + notes, **base)


def _notes(ct: _Ct, r: Reading) -> str:
    notes = ""
    if r.i > OVERLOAD * ct.rated:
        notes += (f"; overloaded: I = {r.i:.3g} A, {100 * r.i / ct.rated:.0f} % of its "
                  f"{ct.rated:g} A rating (it may saturate)")
    if r.thd_i > DISTORTED_THD:
        notes += (f"; its current is distorted (THD {r.thd_i:.0f} %): a non-linear load, "
                  "or a saturating CT")
    return notes


def check_wiring(snaps: Sequence[Snapshot], settings: Settings | None = None) -> WiringReport:
    """Check every CT and main from these seconds; ``settings``: what the wiring should be
    (default: the settings the snapshots carry)."""
    settings = settings or snaps[-1].settings
    readings, v_ln = readings_of(snaps)
    cts = _cts(settings)
    mains, verdicts = [], {}
    for m in range(settings.n_mains):
        nominal = settings.mains[m].nominal_voltage_v
        missing = {p for j, p in enumerate(PHASES) if not v_ln[m, j] >= VOLTAGE_MISSING * nominal}
        mine = [c for c in cts if c.main == m and c.wiring.used_cts[c.pos]]
        real = _swapped_inputs(mine, readings, missing)
        for c in mine:
            verdicts[c.k] = _verdict(c, readings[c.k - 1], missing, real)
        mains.append(_main_verdict(m, missing, v_ln[m], nominal, real))
    for c in cts:
        if c.k not in verdicts:
            verdicts[c.k] = CtVerdict(c.k, "unused", f"CT{c.k} is not used by wiring "
                                      f"{c.wiring.value}")
    return WiringReport(len(snaps), mains, [verdicts[k] for k in sorted(verdicts)])


def _main_verdict(m: int, missing: set[str], v_ln: np.ndarray, nominal: float,
                  real: dict[str, str] | None) -> MainVerdict:
    if missing:
        said = ", ".join(f"phase {p} missing ({v_ln[PHASES.index(p)]:.3g} V of "
                         f"{nominal:g} V nominal)" for p in sorted(missing))
        return MainVerdict(m + 1, "phase_missing", f"main {m + 1}: {said}: check its fuse "
                           "and its wire to the voltage input")
    if real:
        carried = ", ".join(real[p] for p in PHASES)
        swapped = " and ".join(p for p in PHASES if real[p] != p)
        return MainVerdict(m + 1, "inputs_swapped", f"main {m + 1}: its voltage inputs a, b, c "
                           f"carry phases {carried}: inputs {swapped} are swapped (rewire the "
                           "voltage inputs; no setting fixes it). Its CTs are judged as if "
                           "they were put right")
    return MainVerdict(m + 1, "ok", f"main {m + 1} ok")


def _swapped_inputs(cts: list[_Ct], readings: list[Reading], missing: set[str]
                    ) -> dict[str, str] | None:
    """The permutation of the voltage inputs (input -> phase it carries) under which every
    checkable CT of the main fits as configured, when the inputs as wired fit fewer; None."""
    judged = [c for c in cts if c.wiring is not Wiring.W3P3W_2CT and c.wiring is not
              Wiring.W1P3W_2CT and readings[c.k - 1].i >= ANGLE_FLOOR * c.rated and not missing]
    if len(judged) < 2:
        return None

    def fitting(real: dict[str, str] | None) -> int:
        n = 0
        for c in judged:
            h = hypotheses(readings[c.k - 1], c.element_deg(real), (c.phase,))[0]
            n += c.fits(h)
        return n

    as_wired = fitting(None)
    if as_wired == len(judged):
        return None
    for order in (("a", "c", "b"), ("c", "b", "a"), ("b", "a", "c"), ("b", "c", "a"),
                  ("c", "a", "b")):
        real = dict(zip(PHASES, order))
        if fitting(real) == len(judged) and len({c.phase for c in judged}) >= 2:
            return real
    return None
