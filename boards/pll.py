"""PLL clock generation for the three board families: iCE40, ECP5 and Gowin GW1NR-9.

Two layers:

- Pure-Python solvers (:func:`ice40_pll_config`, :func:`ecp5_pll_config`,
  :func:`gowin_pll_config`) pick the divider settings of one vendor PLL for a requested output
  frequency and return a frozen dataclass with the settings, the achieved frequency and the
  internal (PFD, VCO) frequencies. They need no Amaranth and mirror the open tools that people
  check such numbers with: ``icepll`` (IceStorm), ``ecppll`` (Project Trellis) and ``gowin_pll``
  (Apicula); ``tests/boards/test_pll.py`` compares them with those tools.
- Amaranth components (:class:`ICE40PLL`, :class:`ECP5PLL`, :class:`GowinPLL`) that take the
  board oscillator from an amaranth-boards platform, instantiate the primitive (``SB_PLL40_PAD``
  or ``SB_PLL40_CORE``, ``EHXPLLL``, ``rPLL``), drive a clock domain (``sync`` by default) from
  its output, hold that domain in reset until the PLL reports lock (and a short while after,
  see :class:`LockReset`), and tell the platform the output frequency so that nextpnr times the
  design at it.

The board top defines the domain and adds the component::

    m.domains.sync = ClockDomain("sync")
    m.submodules.pll = ICE40PLL(f_in=platform.default_clk_frequency, f_out=48e6)

(Amaranth 0.5 deprecates a domain that a submodule defines for its parents.) A top that forgets
the first line fails in ``prepare`` with "Resource clk12#0 has already been requested": the
platform then makes its own ``sync`` domain from the same oscillator.

All frequencies are in hertz, as everywhere in Amaranth. Every solver computes in exact
rationals (:class:`fractions.Fraction`), so the range checks have no rounding at their edges.

How the output frequency reaches nextpnr
----------------------------------------
Each component calls ``platform.add_clock_constraint`` on the clock it drives the domain with,
at the achieved frequency, and marks that signal ``keep`` (otherwise Yosys merges the net's names
and nextpnr warns "net ... does not exist in design, ignoring clock constraint"). The
oscillator pin is constrained by its board resource already. From there (as measured with the
YoWASP builds of nextpnr 0.11):

- iCE40 (IceStorm flow): Amaranth writes ``set_frequency <net> <MHz>`` into the ``.pcf``;
  ``nextpnr-ice40 --pcf`` applies it. Without it, nextpnr-ice40 derives the same frequency from
  the pin's constraint and the PLL's dividers ("Derived frequency constraint").
- ECP5 (Trellis flow): Amaranth writes ``FREQUENCY NET "<net>" <Hz> HZ;`` into the ``.lpf``;
  ``nextpnr-ecp5 --lpf`` applies it. nextpnr-ecp5 would also derive it, as nextpnr-ice40 does.
- Gowin: Amaranth's Apicula flow writes no clock that nextpnr reads (the ``.cst`` has none; its
  ``.sdc`` is for Gowin's own tools) and calls the old ``nextpnr-gowin``. With
  ``nextpnr-himbaechel`` pass :func:`nextpnr_sdc`'s text with ``--sdc``: himbaechel does not
  derive PLL outputs, and without it times the PLL's clock at its default 12 MHz target
  (``--freq``), a pass that says nothing about the real clock.
"""

import math
import numbers
import re
from dataclasses import dataclass
from fractions import Fraction

from amaranth.hdl import ClockDomain, ClockSignal, Const, Instance, Module, ResetSignal, Signal
from amaranth.lib import io, wiring
from amaranth.lib.cdc import FFSynchronizer, ResetSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = [
    "ICE40PLLConfig", "ECP5PLLConfig", "GowinPLLConfig",
    "ice40_pll_config", "ecp5_pll_config", "gowin_pll_config",
    "ICE40PLL", "ECP5PLL", "GowinPLL", "LockReset",
    "nextpnr_sdc",
]

_MHZ = 10 ** 6


def _mhz(value):
    """``value`` (Hz) as a short MHz string: ``48 MHz``, ``3.125 MHz``, ``100.5 MHz``."""
    return f"{float(value) / _MHZ:.6g} MHz"


def _frequency(name, value):
    """``value`` as an exact positive :class:`Fraction` of hertz, or a clear error."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{name} must be a number of hertz, not {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"{name} must be a positive, finite number of hertz, not {value!r}")
    return Fraction(value)


def _tolerance(value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"tolerance must be a number (a fraction: 0.01 is 1 %), not {value!r}")
    if not math.isfinite(value) or not 0 <= value < 1:
        raise ValueError(f"tolerance must be at least 0 and below 1 (0.01 is 1 %), "
                         f"not {value!r}")
    return Fraction(value)


def _in_range(value, limits):
    low, high = limits
    return low <= value <= high


def _nearest(ideal, low, high):
    """The one or two integers of ``low..high`` next to ``ideal``, ascending (none if empty)."""
    if low > high:
        return []
    return sorted({min(max(value, low), high) for value in (math.floor(ideal), math.ceil(ideal))})


def _check_request(pll, f_out, out_range):
    if not _in_range(f_out, out_range):
        raise ValueError(f"{pll} cannot make {_mhz(f_out)}: its output must be between "
                         f"{_mhz(out_range[0])} and {_mhz(out_range[1])}")


def _check_result(pll, f_in, f_out, fout, tolerance, out_range):
    """Raise unless ``fout``, the closest output found (None: no setting), is close enough."""
    if fout is None:
        raise ValueError(f"{pll} cannot make {_mhz(f_out)} from {_mhz(f_in)}: no setting keeps "
                         f"its internal frequencies in range")
    error = abs(fout - f_out) / f_out
    if error > tolerance:
        raise ValueError(
            f"{pll} cannot make {_mhz(f_out)} from {_mhz(f_in)} within "
            f"{float(tolerance) * 100:g} %: the closest it can make is {_mhz(fout)} "
            f"({float(error) * 100:.3g} % off); its output range is {_mhz(out_range[0])} to "
            f"{_mhz(out_range[1])}")


@dataclass(frozen=True)
class _PLLConfig:
    f_in: float
    f_requested: float
    f_out: float
    f_pfd: float
    f_vco: float

    @property
    def error(self):
        """Signed relative error of the achieved frequency, ``(f_out - f_requested) / f_requested``.
        """
        return (self.f_out - self.f_requested) / self.f_requested


# --- iCE40 -----------------------------------------------------------------------------------

#: Limits that ``icepll`` applies (iCE40 sysCLOCK PLL design and usage guide, TN1251), in Hz.
ICE40_IN = (10 * _MHZ, 133 * _MHZ)
ICE40_PFD = (10 * _MHZ, 133 * _MHZ)
ICE40_VCO = (533 * _MHZ, 1066 * _MHZ)
ICE40_OUT = (16 * _MHZ, 275 * _MHZ)


@dataclass(frozen=True)
class ICE40PLLConfig(_PLLConfig):
    """Settings of an iCE40 ``SB_PLL40_*`` in ``SIMPLE`` feedback mode.

    ``f_pfd = f_in / (divr + 1)``, ``f_vco = f_pfd * (divf + 1)``, ``f_out = f_vco / 2 ** divq``.

    Attributes
    ----------
    f_in, f_requested, f_out, f_pfd, f_vco : float
        Input, requested and achieved output, phase detector and VCO frequencies, in Hz.
    divr : int
        Reference divider, 0 to 15 (``DIVR``).
    divf : int
        Feedback divider, 0 to 127 (``DIVF``).
    divq : int
        Output divider exponent, 1 to 6 (``DIVQ``: the VCO is divided by ``2 ** divq``).
    filter_range : int
        Loop filter setting for the PFD frequency, 1 to 6 (``FILTER_RANGE``).
    feedback_path : str
        Always ``"SIMPLE"``.
    """
    divr: int
    divf: int
    divq: int
    filter_range: int
    feedback_path: str = "SIMPLE"

    def parameters(self):
        """The primitive's parameters, as ``Instance`` keyword arguments (``p_DIVR=...``)."""
        return dict(p_FEEDBACK_PATH=self.feedback_path,
                    p_DIVR=Const(self.divr, 4),
                    p_DIVF=Const(self.divf, 7),
                    p_DIVQ=Const(self.divq, 3),
                    p_FILTER_RANGE=Const(self.filter_range, 3))


def _ice40_filter_range(f_pfd):
    # icepll's table (thresholds in MHz, on the PFD frequency).
    for threshold, value in ((17, 1), (26, 2), (44, 3), (66, 4), (101, 5)):
        if f_pfd < threshold * _MHZ:
            return value
    return 6


def ice40_pll_config(f_in, f_out, *, tolerance=0.01):
    """Settings of an iCE40 PLL (``SIMPLE`` feedback) for ``f_out`` from an ``f_in`` clock.

    The search is ``icepll``'s: DIVR 0..15, DIVF 0..127, DIVQ 1..6 in that nesting, keeping the
    output closest to ``f_out`` and, on a tie, the first found: the smallest DIVR (the highest
    phase detector frequency, which keeps jitter lowest), then the lowest VCO. Unlike
    ``icepll``, the achieved output must also be within the output range (``icepll`` returns
    276 MHz for 275 MHz from 12 MHz).

    Parameters
    ----------
    f_in : float
        Input clock in Hz, 10 to 133 MHz.
    f_out : float
        Requested output clock in Hz, 16 to 275 MHz.
    tolerance : float
        Largest accepted relative error (0.01 is 1 %).

    Returns
    -------
    ICE40PLLConfig

    Raises
    ------
    TypeError
        If a frequency or the tolerance is not a number.
    ValueError
        If an input is out of range, or no setting comes within ``tolerance`` of ``f_out``.
    """
    f_in_q, f_out_q = _frequency("f_in", f_in), _frequency("f_out", f_out)
    tolerance = _tolerance(tolerance)
    if not _in_range(f_in_q, ICE40_IN):
        raise ValueError(f"iCE40 PLL input {_mhz(f_in_q)} is outside {_mhz(ICE40_IN[0])} to "
                         f"{_mhz(ICE40_IN[1])}")
    _check_request("iCE40 PLL", f_out_q, ICE40_OUT)

    # icepll keeps the first closest setting in its loops' order (DIVR, DIVF, DIVQ): the
    # smallest (error, DIVR, DIVF, DIVQ). For a DIVR and a DIVQ the output grows with DIVF and
    # the DIVF in range are contiguous, so only the two next to the ideal one can be closest.
    best = None  # (error, divr, divf, divq)
    for divr in range(16):
        f_pfd = f_in_q / (divr + 1)
        if not _in_range(f_pfd, ICE40_PFD):
            continue
        for divq in range(1, 7):
            step = f_pfd / 2 ** divq  # the output for each unit of DIVF + 1
            low = max(1, math.ceil(ICE40_VCO[0] / f_pfd), math.ceil(ICE40_OUT[0] / step))
            high = min(128, math.floor(ICE40_VCO[1] / f_pfd), math.floor(ICE40_OUT[1] / step))
            for mult in _nearest(f_out_q / step, low, high):
                key = (abs(step * mult - f_out_q), divr, mult - 1, divq)
                if best is None or key < best:
                    best = key

    if best is None:
        _check_result("iCE40 PLL", f_in_q, f_out_q, None, tolerance, ICE40_OUT)
    _, divr, divf, divq = best
    f_pfd = f_in_q / (divr + 1)
    fout = f_pfd * (divf + 1) / 2 ** divq
    _check_result("iCE40 PLL", f_in_q, f_out_q, fout, tolerance, ICE40_OUT)
    return ICE40PLLConfig(f_in=float(f_in_q), f_requested=float(f_out_q), f_out=float(fout),
                          f_pfd=float(f_pfd), f_vco=float(f_pfd * (divf + 1)),
                          divr=divr, divf=divf, divq=divq,
                          filter_range=_ice40_filter_range(f_pfd))


# --- ECP5 ------------------------------------------------------------------------------------

#: ECP5 ``EHXPLLL`` limits as ``ecppll`` applies them (ECP5 sysCLOCK guide, TN1263), in Hz.
ECP5_PFD = (Fraction(3125, 1000) * _MHZ, 400 * _MHZ)
ECP5_VCO = (400 * _MHZ, 800 * _MHZ)
ECP5_OUT = (Fraction(3125, 1000) * _MHZ, 400 * _MHZ)
#: The VCO frequency ``ecppll`` prefers among equally close settings.
ECP5_VCO_PREFERRED = 600 * _MHZ


@dataclass(frozen=True)
class ECP5PLLConfig(_PLLConfig):
    """Settings of an ECP5 ``EHXPLLL`` with ``CLKOP`` as its output and its feedback.

    ``f_pfd = f_in / clki_div``, ``f_out = f_pfd * clkfb_div``, ``f_vco = f_out * clkop_div``.

    Attributes
    ----------
    f_in, f_requested, f_out, f_pfd, f_vco : float
        Input, requested and achieved output, phase detector and VCO frequencies, in Hz.
    clki_div, clkfb_div, clkop_div : int
        Input, feedback and output dividers, 1 to 128 each.
    clkop_cphase : int
        Coarse phase of ``CLKOP`` in VCO cycles: ``clkop_div - 1`` is 0 degrees.
    clkop_fphase : int
        Fine phase of ``CLKOP``: always 0.
    feedbk_path : str
        Always ``"CLKOP"``.
    """
    clki_div: int
    clkfb_div: int
    clkop_div: int
    clkop_cphase: int
    clkop_fphase: int = 0
    feedbk_path: str = "CLKOP"

    def parameters(self):
        """The primitive's parameters and attributes, as ``Instance`` keyword arguments."""
        return dict(p_PLLRST_ENA="DISABLED",
                    p_INTFB_WAKE="DISABLED",
                    p_STDBY_ENABLE="DISABLED",
                    p_DPHASE_SOURCE="DISABLED",
                    p_OUTDIVIDER_MUXA="DIVA",
                    p_OUTDIVIDER_MUXB="DIVB",
                    p_OUTDIVIDER_MUXC="DIVC",
                    p_OUTDIVIDER_MUXD="DIVD",
                    p_CLKI_DIV=self.clki_div,
                    p_CLKFB_DIV=self.clkfb_div,
                    p_CLKOP_ENABLE="ENABLED",
                    p_CLKOP_DIV=self.clkop_div,
                    p_CLKOP_CPHASE=self.clkop_cphase,
                    p_CLKOP_FPHASE=self.clkop_fphase,
                    p_FEEDBK_PATH=self.feedbk_path,
                    # ecppll's loop filter and the frequencies Lattice's tools annotate.
                    a_ICP_CURRENT="12",
                    a_LPF_RESISTOR="8",
                    a_MFG_ENABLE_FILTEROPAMP="1",
                    a_MFG_GMCREF_SEL="2",
                    a_FREQUENCY_PIN_CLKI=f"{self.f_in / _MHZ:.6f}",
                    a_FREQUENCY_PIN_CLKOP=f"{self.f_out / _MHZ:.6f}")


def _ecp5_clkop_div(fout):
    """The CLKOP_DIV that puts the VCO closest to 600 MHz for ``fout`` (the smaller on a tie).

    CLKOP_DIV only moves the VCO, so this is what ``ecppll``'s innermost loop settles on.
    """
    low = max(1, math.ceil(ECP5_VCO[0] / fout))
    high = min(128, math.floor(ECP5_VCO[1] / fout))
    assert low <= high, fout  # every output from 3.125 to 400 MHz has one
    return min(_nearest(ECP5_VCO_PREFERRED / fout, low, high),
               key=lambda div: (abs(fout * div - ECP5_VCO_PREFERRED), div))


def ecp5_pll_config(f_in, f_out, *, tolerance=0.01):
    """Settings of an ECP5 ``EHXPLLL`` (``CLKOP`` output and feedback) for ``f_out``.

    The search is ``ecppll``'s: CLKI_DIV, CLKFB_DIV, CLKOP_DIV in that nesting, keeping the
    output closest to ``f_out``; among equally close settings, the one whose VCO is closest to
    600 MHz (the middle of its range, where Lattice's tools put it), then the first found.
    Differences from ``ecppll``: CLKFB_DIV goes up to 128 as the hardware allows (``ecppll``
    stops at 80, so it can be farther off above 250 MHz), the output must be within its range,
    the arithmetic is exact rather than in single precision, and CLKOP_CPHASE is
    ``CLKOP_DIV - 1`` (0 degrees; ``ecppll`` uses ``CLKOP_DIV // 2``, 180 degrees, which makes no
    difference to a clock that is its own feedback).

    Parameters
    ----------
    f_in : float
        Input clock in Hz (at least 3.125 MHz).
    f_out : float
        Requested output clock in Hz, 3.125 to 400 MHz.
    tolerance : float
        Largest accepted relative error (0.01 is 1 %).

    Returns
    -------
    ECP5PLLConfig

    Raises
    ------
    TypeError
        If a frequency or the tolerance is not a number.
    ValueError
        If ``f_out`` is out of range, or no setting comes within ``tolerance`` of it.
    """
    f_in_q, f_out_q = _frequency("f_in", f_in), _frequency("f_out", f_out)
    tolerance = _tolerance(tolerance)
    _check_request("ECP5 PLL", f_out_q, ECP5_OUT)

    best = None  # ((error, VCO's distance to 600 MHz), fout, clki, clkfb, clkop)
    for clki in range(1, 129):
        f_pfd = f_in_q / clki
        if not _in_range(f_pfd, ECP5_PFD):
            continue
        # The CLKFB_DIV that keep the output in range are contiguous (and every such output has
        # a CLKOP_DIV that puts the VCO in range), so the closest output of this CLKI_DIV is
        # one of the two neighbours of the ideal divider, clamped to that span. The others
        # are farther off and would never win, not even a tie.
        fb_low = max(1, math.ceil(ECP5_OUT[0] / f_pfd))
        fb_high = min(128, math.floor(ECP5_OUT[1] / f_pfd))
        for clkfb in _nearest(f_out_q / f_pfd, fb_low, fb_high):
            fout = f_pfd * clkfb
            clkop = _ecp5_clkop_div(fout)
            key = (abs(fout - f_out_q), abs(fout * clkop - ECP5_VCO_PREFERRED))
            if best is None or key < best[0]:
                best = (key, fout, clki, clkfb, clkop)

    if best is None:
        _check_result("ECP5 PLL", f_in_q, f_out_q, None, tolerance, ECP5_OUT)
    _, fout, clki, clkfb, clkop = best
    _check_result("ECP5 PLL", f_in_q, f_out_q, fout, tolerance, ECP5_OUT)
    return ECP5PLLConfig(f_in=float(f_in_q), f_requested=float(f_out_q), f_out=float(fout),
                         f_pfd=float(f_in_q / clki), f_vco=float(fout * clkop),
                         clki_div=clki, clkfb_div=clkfb, clkop_div=clkop,
                         clkop_cphase=clkop - 1)


# --- Gowin -----------------------------------------------------------------------------------

#: GW1NR-9 / GW1N-9 C6/I5 rPLL limits, in Hz: Gowin's GW1NR datasheet (DS117, "PLL timing"),
#: as Apicula's ``gowin_pll`` tool lists them for "GW1NR-9 C6/I5" (tested there on the Tang
#: Nano 9K): PFD 3 to 400 MHz, VCO 400 to 1200 MHz, CLKOUT 3.125 to 600 MHz. Like
#: ``gowin_pll``, the VCO and CLKOUT bounds are exclusive.
GOWIN_PFD = (3 * _MHZ, 400 * _MHZ)
GOWIN_VCO = (400 * _MHZ, 1200 * _MHZ)
GOWIN_OUT = (Fraction(3125, 1000) * _MHZ, 600 * _MHZ)
#: The rPLL output divider's settings (``ODIV_SEL``).
GOWIN_ODIV = (2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128)


@dataclass(frozen=True)
class GowinPLLConfig(_PLLConfig):
    """Settings of a Gowin ``rPLL`` (GW1NR-9, speed grade C6/I5) with internal feedback.

    ``f_pfd = f_in / (idiv_sel + 1)``, ``f_out = f_pfd * (fbdiv_sel + 1)``,
    ``f_vco = f_out * odiv_sel``.

    Attributes
    ----------
    f_in, f_requested, f_out, f_pfd, f_vco : float
        Input, requested and achieved output, phase detector and VCO frequencies, in Hz.
    idiv_sel, fbdiv_sel : int
        Input and feedback divider settings, 0 to 63 (the dividers are one more).
    odiv_sel : int
        Output divider, one of 2, 4, 8, 16, 32, 48, 64, 80, 96, 112, 128.
    """
    idiv_sel: int
    fbdiv_sel: int
    odiv_sel: int

    def parameters(self, device="GW1NR-9C"):
        """The primitive's parameters, as ``Instance`` keyword arguments."""
        return dict(p_FCLKIN=f"{self.f_in / _MHZ:g}",
                    p_DEVICE=device,
                    p_DYN_IDIV_SEL="false",
                    p_IDIV_SEL=self.idiv_sel,
                    p_DYN_FBDIV_SEL="false",
                    p_FBDIV_SEL=self.fbdiv_sel,
                    p_DYN_ODIV_SEL="false",
                    p_ODIV_SEL=self.odiv_sel,
                    p_CLKFB_SEL="internal",
                    p_CLKOUT_BYPASS="false",
                    p_CLKOUTP_BYPASS="false",
                    p_CLKOUTD_BYPASS="false")


def gowin_pll_config(f_in, f_out, *, tolerance=0.01):
    """Settings of a GW1NR-9 (C6/I5) ``rPLL`` for ``f_out`` from an ``f_in`` clock.

    The search is Apicula ``gowin_pll``'s: IDIV_SEL, FBDIV_SEL, ODIV_SEL in that nesting,
    keeping the output closest to ``f_out`` and, on a tie, the first found: the smallest
    IDIV_SEL (the highest phase detector frequency), then the smallest ODIV_SEL (the lowest VCO
    that is in range).

    Parameters
    ----------
    f_in : float
        Input clock in Hz (the Tang Nano 9K's oscillator is 27 MHz).
    f_out : float
        Requested output clock in Hz, above 3.125 and below 600 MHz.
    tolerance : float
        Largest accepted relative error (0.01 is 1 %).

    Returns
    -------
    GowinPLLConfig

    Raises
    ------
    TypeError
        If a frequency or the tolerance is not a number.
    ValueError
        If ``f_out`` is out of range, or no setting comes within ``tolerance`` of it.
    """
    f_in_q, f_out_q = _frequency("f_in", f_in), _frequency("f_out", f_out)
    tolerance = _tolerance(tolerance)
    low, high = GOWIN_OUT
    if not low < f_out_q < high:
        raise ValueError(f"Gowin rPLL cannot make {_mhz(f_out_q)}: its output must be above "
                         f"{_mhz(low)} and below {_mhz(high)}")

    # gowin_pll keeps the first closest setting in its loops' order: the smallest (error,
    # IDIV_SEL, FBDIV_SEL), with the first ODIV_SEL that puts the VCO in range. Every output in
    # range has such an ODIV_SEL (their VCO ranges overlap), so for an IDIV_SEL the FBDIV_SEL
    # in range are contiguous and only the two next to the ideal one can be closest.
    best = None  # (error, idiv, fbdiv)
    for idiv in range(64):
        f_pfd = f_in_q / (idiv + 1)
        if not _in_range(f_pfd, GOWIN_PFD):
            continue
        mult_low = max(1, math.floor(low / f_pfd) + 1)      # exclusive bounds
        mult_high = min(64, math.ceil(high / f_pfd) - 1)
        for mult in _nearest(f_out_q / f_pfd, mult_low, mult_high):
            key = (abs(f_pfd * mult - f_out_q), idiv, mult - 1)
            if best is None or key < best:
                best = key

    if best is None:
        _check_result("Gowin rPLL", f_in_q, f_out_q, None, tolerance, GOWIN_OUT)
    _, idiv, fbdiv = best
    fout = f_in_q / (idiv + 1) * (fbdiv + 1)
    _check_result("Gowin rPLL", f_in_q, f_out_q, fout, tolerance, GOWIN_OUT)
    odiv = next(div for div in GOWIN_ODIV if GOWIN_VCO[0] < fout * div < GOWIN_VCO[1])
    return GowinPLLConfig(f_in=float(f_in_q), f_requested=float(f_out_q), f_out=float(fout),
                          f_pfd=float(f_in_q / (idiv + 1)), f_vco=float(fout * odiv),
                          idiv_sel=idiv, fbdiv_sel=fbdiv, odiv_sel=odiv)


# --- Amaranth components ---------------------------------------------------------------------

class LockReset(wiring.Component):
    """Holds a clock domain in reset until a PLL locks, and for ``hold_cycles`` after.

    The reset is asserted at once (asynchronously) when ``lock`` is low and released on an edge
    of the domain's clock, through :class:`amaranth.lib.cdc.ResetSynchronizer`. After ``lock``
    rises (seen through a two-flop synchronizer) a counter waits ``hold_cycles`` cycles of the
    domain's clock before the release; it restarts whenever lock is lost. The wait is for the
    iCE40, whose block RAMs read as zeros for about 3 us after configuration (Amaranth's own
    iCE40 ``sync`` domain waits 15 us for the same reason).

    The domain itself (its clock) is defined elsewhere; this drives its reset.

    Parameters
    ----------
    domain : str
        The clock domain whose reset this drives.
    hold_cycles : int
        Cycles of the domain's clock between lock and the release of the reset.
    buffer : callable or None
        ``buffer(m, i, o)`` adds to module ``m`` a buffer from the synchronized reset ``i`` to
        the domain's reset ``o``: a global buffer on a family whose router will not promote a
        reset by itself. None: ``i`` drives ``o`` directly.

    Members
    -------
    lock : In(1)
        The PLL's lock output, asynchronous to the domain.
    locked : Out(1)
        ``lock`` synchronized to the domain's clock (not reset by the domain's reset).
    """
    def __init__(self, *, domain="sync", hold_cycles=0, buffer=None):
        if not isinstance(domain, str) or not domain:
            self._MustUse__silence = True
            raise TypeError(f"domain must be a non-empty string, not {domain!r}")
        if isinstance(hold_cycles, bool) or not isinstance(hold_cycles, int) or hold_cycles < 0:
            self._MustUse__silence = True
            raise TypeError(f"hold_cycles must be a non-negative integer, not {hold_cycles!r}")
        if buffer is not None and not callable(buffer):
            self._MustUse__silence = True
            raise TypeError(f"buffer must be callable or None, not {buffer!r}")
        self._domain = domain
        self._hold_cycles = hold_cycles
        self._buffer = buffer
        super().__init__({"lock": In(1), "locked": Out(1)})

    def elaborate(self, platform):
        m = Module()
        # A reset-less twin of the domain's clock, so that the counter runs during the reset.
        m.domains.hold = ClockDomain("hold", reset_less=True, local=True)
        m.d.comb += ClockSignal("hold").eq(ClockSignal(self._domain))
        m.submodules.lock_sync = FFSynchronizer(self.lock, self.locked, o_domain="hold")
        timer = Signal(range(self._hold_cycles + 1))
        ready = Signal()
        with m.If(~self.locked):
            m.d.hold += [timer.eq(0), ready.eq(0)]
        with m.Elif(timer == self._hold_cycles):
            m.d.hold += ready.eq(1)
        with m.Else():
            m.d.hold += timer.eq(timer + 1)
        if self._buffer is None:
            m.submodules.reset_sync = ResetSynchronizer(~self.lock | ~ready, domain=self._domain)
        else:
            # The synchronizer drives a twin domain's reset, which the buffer passes on.
            m.domains.unbuffered = ClockDomain("unbuffered", local=True)
            m.d.comb += ClockSignal("unbuffered").eq(ClockSignal(self._domain))
            m.submodules.reset_sync = ResetSynchronizer(~self.lock | ~ready, domain="unbuffered")
            self._buffer(m, ResetSignal("unbuffered"), ResetSignal(self._domain))
        return m


class _PLL(wiring.Component):
    """The part the three families share: the clock domain, its reset and the constraint."""

    _solver = None  # staticmethod(f_in, f_out, *, tolerance) -> config
    _reset_buffer = None  # staticmethod(m, i, o), see LockReset

    def __init__(self, *, f_in, f_out, domain="sync", resource=None, tolerance=0.01,
                 hold_time=15e-6):
        try:
            self._f_in = float(_frequency("f_in", f_in))
            self._f_requested = float(_frequency("f_out", f_out))
            if not isinstance(domain, str) or not domain:
                raise TypeError(f"domain must be a non-empty string, not {domain!r}")
            self._resource = self._resource_key(resource)
            if (isinstance(hold_time, bool) or not isinstance(hold_time, numbers.Real)):
                raise TypeError(f"hold_time must be a number of seconds, not {hold_time!r}")
            if not math.isfinite(hold_time) or hold_time < 0:
                raise ValueError(f"hold_time must be zero or more seconds, not {hold_time!r}")
            if self._f_requested == self._f_in:
                _tolerance(tolerance)  # still reject a bad argument
                self._config = None
            else:
                self._config = type(self)._solver(f_in, f_out, tolerance=tolerance)
        except (TypeError, ValueError):
            self._MustUse__silence = True
            raise
        self._domain = domain
        self._hold_time = float(hold_time)
        super().__init__({"locked": Out(1)})

    @staticmethod
    def _resource_key(resource):
        if resource is None:
            return None
        if isinstance(resource, str):
            return (resource, 0)
        if (isinstance(resource, tuple) and len(resource) == 2 and isinstance(resource[0], str)
                and isinstance(resource[1], int) and not isinstance(resource[1], bool)):
            return resource
        raise TypeError(f"resource must be None, a resource name or a (name, number) pair, "
                        f"not {resource!r}")

    @property
    def config(self):
        """The solver's result, or None when the oscillator drives the domain directly."""
        return self._config

    @property
    def bypassed(self):
        """True when ``f_out == f_in``: no PLL, the oscillator drives the domain."""
        return self._config is None

    @property
    def f_in(self):
        """The oscillator frequency, in Hz."""
        return self._f_in

    @property
    def f_requested(self):
        """The requested output frequency, in Hz."""
        return self._f_requested

    @property
    def f_out(self):
        """The achieved output frequency, in Hz (what nextpnr is told to meet)."""
        return self._f_in if self._config is None else self._config.f_out

    @property
    def domain(self):
        """Name of the clock domain this creates."""
        return self._domain

    @property
    def hold_cycles(self):
        """Cycles of the output clock that the domain stays in reset after the PLL locks."""
        # Rounded first, so that 15 us at 48 MHz is 720 cycles and not 721.
        return math.ceil(round(self._hold_time * self.f_out, 6))

    def _check_platform(self, platform):
        raise NotImplementedError  # pragma: no cover

    def _clock_input(self, m, platform, port, clk, lock):
        """Add the PLL (driving ``clk`` and ``lock``) fed from the oscillator's ``port``."""
        raise NotImplementedError  # pragma: no cover

    def elaborate(self, platform):
        if platform is None:
            raise TypeError(f"{type(self).__name__} instantiates a vendor primitive and needs a "
                            f"platform (it cannot be simulated)")
        self._check_platform(platform)
        name, number = self._resource or (platform.default_clk, 0)
        if name is None:
            raise ValueError(f"Platform {type(platform).__name__} has no default clock; pass "
                             f"resource=")
        clock = platform.lookup(name, number).clock
        if clock is not None and clock.frequency != self._f_in:
            raise ValueError(f"f_in is {_mhz(self._f_in)} but {name} {number} of "
                             f"{type(platform).__name__} runs at {_mhz(clock.frequency)}")
        port = platform.request(name, number, dir="-")

        m = Module()
        # The domain is the parent's (Amaranth 0.6 drops domains that a submodule defines for
        # its parents); this drives its clock and its reset.
        clk = Signal(name="clk_out")
        lock = Signal()
        if self._config is None:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", port)
            m.d.comb += [clk.eq(clk_buf.i), lock.eq(1)]
        else:
            self._clock_input(m, platform, port, clk, lock)
        m.d.comb += ClockSignal(self._domain).eq(clk)
        # Without "keep", Yosys merges this net's names and nextpnr cannot find the constrained
        # one ("net ... does not exist in design, ignoring clock constraint").
        clk.attrs["keep"] = "true"
        platform.add_clock_constraint(clk, self.f_out)

        m.submodules.lock_reset = lock_reset = LockReset(domain=self._domain,
                                                         hold_cycles=self.hold_cycles,
                                                         buffer=self._reset_buffer)
        m.d.comb += [lock_reset.lock.eq(lock), self.locked.eq(lock_reset.locked)]
        return m


_COMPONENT_DOC = """
    Parameters
    ----------
    f_in : float
        Frequency of the oscillator, in Hz (for example ``platform.default_clk_frequency``);
        checked against the clock resource's own when it declares one.
    f_out : float
        Requested frequency of the domain's clock, in Hz. Equal to ``f_in``: no PLL, the
        buffered oscillator drives the domain (handy for small configurations).
    domain : str
        Name of the clock domain to drive (``"sync"`` by default). The parent defines it, with a
        reset: ``m.domains.sync = ClockDomain("sync")``.
    resource : str or (str, int) or None
        The oscillator's resource; None for ``platform.default_clk``, number 0.
    tolerance : float
        Largest accepted relative error of the output frequency (0.01 is 1 %).
    hold_time : float
        Seconds the domain stays in reset after the PLL locks (15 us by default).{extra}

    Attributes
    ----------
    config : {config} or None
        The chosen settings and the achieved frequencies; None when bypassed.
    f_out : float
        The achieved output frequency, in Hz; the platform's clock constraint for the domain.

    Members
    -------
    locked : Out(1)
        The PLL's lock, synchronized to the new clock (always 1 when bypassed); the domain is
        out of reset ``hold_time`` after it rises.

    Raises
    ------
    TypeError
        If a frequency is not a number.
    ValueError
        If the output frequency cannot be made within ``tolerance`` (at construction), or the
        platform is of another family or its oscillator runs at another frequency (at
        elaboration).
"""


class ICE40PLL(_PLL):
    __doc__ = """An iCE40 PLL (``SB_PLL40_PAD`` or ``SB_PLL40_CORE``) that drives a clock domain.

    The output clock leaves the PLL on ``PLLOUTGLOBAL``, a global buffer. With ``pad=True`` (the
    default) the PLL takes the oscillator straight from its pin through ``SB_PLL40_PAD``, as it
    must when the pin is the PLL's own pad (the iCEBreaker's 12 MHz on pin 35 is). With
    ``pad=False``, the pin goes through an ``SB_IO`` into ``SB_PLL40_CORE``.
    """ + _COMPONENT_DOC.format(config="ICE40PLLConfig", extra="""
    pad : bool
        Use ``SB_PLL40_PAD`` on the oscillator's pin (True) or ``SB_PLL40_CORE`` (False).""")

    _solver = staticmethod(ice40_pll_config)

    def __init__(self, *, f_in, f_out, domain="sync", resource=None, tolerance=0.01,
                 hold_time=15e-6, pad=True):
        if not isinstance(pad, bool):
            self._MustUse__silence = True
            raise TypeError(f"pad must be True or False, not {pad!r}")
        self._pad = pad
        super().__init__(f_in=f_in, f_out=f_out, domain=domain, resource=resource,
                         tolerance=tolerance, hold_time=hold_time)

    def _check_platform(self, platform):
        if getattr(platform, "family", None) != "iCE40":
            raise ValueError(f"ICE40PLL needs an iCE40 platform, not {type(platform).__name__}")

    def _clock_input(self, m, platform, port, clk, lock):
        ports = dict(i_RESETB=Const(1), i_BYPASS=Const(0),
                     o_PLLOUTGLOBAL=clk, o_LOCK=lock)
        if self._pad:
            if len(port) != 1 or port.invert[0]:
                raise ValueError("SB_PLL40_PAD needs a single, non-inverted clock pin")
            # The pad feeds the PLL directly: no SB_IO in between.
            m.submodules.pll = Instance("SB_PLL40_PAD", **self._config.parameters(),
                                        i_PACKAGEPIN=port.io, **ports)
        else:
            m.submodules.clk_buf = clk_buf = io.Buffer("i", port)
            m.submodules.pll = Instance("SB_PLL40_CORE", **self._config.parameters(),
                                        i_REFERENCECLK=clk_buf.i, **ports)


class ECP5PLL(_PLL):
    __doc__ = """An ECP5 ``EHXPLLL`` that drives a clock domain from ``CLKOP`` (also its feedback).

    The oscillator's pin goes through an input buffer into ``CLKI``.
    """ + _COMPONENT_DOC.format(config="ECP5PLLConfig", extra="")

    _solver = staticmethod(ecp5_pll_config)

    @staticmethod
    def _reset_buffer(m, i, o):
        # The domain's reset reaches every flip-flop's LSR. On a general route from one
        # flip-flop that took 15 ns across an 85F (the critical path of a 12 x 12 build), and
        # this nextpnr promotes only clocks to the global network by itself.
        m.submodules.reset_buf = Instance("DCCA", i_CLKI=i, i_CE=Const(1), o_CLKO=o)

    def _check_platform(self, platform):
        if getattr(platform, "family", None) != "ecp5":
            raise ValueError(f"ECP5PLL needs an ECP5 platform, not {type(platform).__name__}")

    def _clock_input(self, m, platform, port, clk, lock):
        m.submodules.clk_buf = clk_buf = io.Buffer("i", port)
        m.submodules.pll = Instance("EHXPLLL", **self._config.parameters(),
                                    i_CLKI=clk_buf.i,
                                    i_CLKFB=clk,
                                    i_RST=Const(0), i_STDBY=Const(0),
                                    i_PHASESEL0=Const(0), i_PHASESEL1=Const(0),
                                    i_PHASEDIR=Const(0), i_PHASESTEP=Const(0),
                                    i_PHASELOADREG=Const(0), i_PLLWAKESYNC=Const(0),
                                    i_ENCLKOP=Const(0),
                                    o_CLKOP=clk, o_LOCK=lock)


class GowinPLL(_PLL):
    __doc__ = """A Gowin GW1NR-9 ``rPLL`` (speed grade C6/I5) that drives a clock domain.

    The Tang Nano 9K's FPGA is of that kind. The oscillator's pin goes through an input buffer
    into ``CLKIN``; the domain's clock is ``CLKOUT``, with the PLL's internal feedback.
    """ + _COMPONENT_DOC.format(config="GowinPLLConfig", extra="")

    _solver = staticmethod(gowin_pll_config)

    def _check_platform(self, platform):
        family = getattr(platform, "family", "")
        part = getattr(platform, "part", "")
        if not (isinstance(family, str) and re.fullmatch(r"GW1NR?-9C?", family)
                and isinstance(part, str) and part.endswith("C6/I5")):
            raise ValueError(f"GowinPLL knows the rPLL limits of the GW1N(R)-9 in speed grade "
                             f"C6/I5 only, not {part or type(platform).__name__}")

    def _clock_input(self, m, platform, port, clk, lock):
        m.submodules.clk_buf = clk_buf = io.Buffer("i", port)
        m.submodules.pll = Instance("rPLL", **self._config.parameters(device=platform.family),
                                    i_CLKIN=clk_buf.i,
                                    i_CLKFB=Const(0),
                                    i_RESET=Const(0), i_RESET_P=Const(0),
                                    i_FBDSEL=Const(0, 6), i_IDSEL=Const(0, 6),
                                    i_ODSEL=Const(0, 6),
                                    i_PSDA=Const(0, 4), i_DUTYDA=Const(0, 4),
                                    i_FDLY=Const(0, 4),
                                    o_CLKOUT=clk, o_LOCK=lock)


def nextpnr_sdc(platform):
    """Clock constraints of a prepared platform as an SDC file for ``nextpnr --sdc``.

    Amaranth's Gowin (Apicula) flow writes no clock constraint that nextpnr reads; this renders
    the ones the platform holds (its oscillator pins and :class:`GowinPLL`'s output) in the
    subset of SDC that nextpnr understands. Call it after ``platform.prepare(...)``, which
    assigns the net names.

    Returns
    -------
    str
    """
    lines = []
    for port, frequency in platform.iter_port_clock_constraints():
        lines.append(f"create_clock -period {1e9 / frequency:.6f} [get_ports {{{port.name}}}]")
    for signal, frequency in platform.iter_signal_clock_constraints():
        name = ".".join(platform._name_map[signal][1:])
        lines.append(f"create_clock -period {1e9 / frequency:.6f} [get_nets {{{name}}}]")
    return "\n".join(lines) + "\n"
