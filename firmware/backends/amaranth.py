"""The accelerator's RTL in Amaranth's simulator, as a backend.

:class:`AmaranthBackend` wraps :func:`sim.accelerator_driver.run_accelerator`, which builds a new
simulation for every call. **Each exchange therefore runs on a freshly reset device**: memories,
weight tiles and counters do not survive from one exchange to the next (``persistent`` is
False). :class:`firmware.runtime.Device` sends each run (the program with its counter reads
around it) as one exchange, so runs and matrix products work the same as on the other backends;
only state carried *between* runs (data left in the unified buffer, counters read later) is
lost, and ``Device.counters()`` answers with the counters read at the end of the last run.

How long to simulate: the driver stops a given number of cycles after an expected number of
response bytes, and the backend gets that number from the functional model
(:class:`sim.golden.accelerator.AcceleratorModel`, run on a fresh model, so the count includes
every DATA, STATUS and ERROR packet the ISA says the program produces). A device that answers
less runs into the cycle budget and raises :class:`~firmware.backends.DeviceTimeout`; one that
answers more shows the surplus in the returned bytes.
"""

from firmware.isa import Geometry

from . import Backend, DeviceTimeout, default_cycle_budget

__all__ = ["AmaranthBackend"]


class AmaranthBackend(Backend):
    """:class:`rtl.accelerator.Accelerator` in Amaranth's simulator (slow, no build step).

    Parameters
    ----------
    geometry : firmware.isa.Geometry
    stall : float
        Probability that the host refuses an output byte in a cycle (output backpressure).
    idle : float
        Probability that the host leaves the input idle for a cycle before a byte.
    seed : int
        Seed of ``stall`` and ``idle``.
    max_cycles : int or None
        Cycle budget of every exchange (default :func:`~firmware.backends.default_cycle_budget`).
    ppu_lanes : int or None
        The PPU's lanes, 1 to C (:class:`rtl.accelerator.Accelerator`); None means C.
    """
    name = "amaranth"
    timed = True
    persistent = False

    def __init__(self, geometry=Geometry(), *, stall=0.0, idle=0.0, seed=0, max_cycles=None,
                 ppu_lanes=None):
        super().__init__(geometry)
        from sim.accelerator_driver import run_accelerator
        self._run = run_accelerator
        if not 0 <= stall < 1 or not 0 <= idle < 1:
            raise ValueError(f"stall and idle are probabilities below 1, not {stall!r} and "
                             f"{idle!r}")
        if ppu_lanes is not None:
            if not isinstance(ppu_lanes, int) or isinstance(ppu_lanes, bool):
                raise TypeError(f"ppu_lanes must be an integer or None, not {ppu_lanes!r}")
            if not 1 <= ppu_lanes <= self.geometry.cols:
                raise ValueError(f"ppu_lanes must be between 1 and {self.geometry.cols}, not "
                                 f"{ppu_lanes!r}")
        self.stall, self.idle, self.seed = stall, idle, seed
        self.ppu_lanes = ppu_lanes
        self.max_cycles = max_cycles
        self._cycles = None

    def exchange(self, program, *, max_cycles=None):
        """Run ``program`` on a freshly reset simulated device (see the module documentation)."""
        from sim.golden.accelerator import AcceleratorModel
        self._check_open()
        program = bytes(program)
        if not program:
            return b""
        expected = len(AcceleratorModel(self.geometry).run(program))
        budget = max_cycles or self.max_cycles or default_cycle_budget(program, self.geometry)
        try:
            output, cycles = self._run(program, self.geometry, response_length=expected,
                                       idle=self.idle, stall=self.stall, seed=self.seed,
                                       max_cycles=budget, ppu_lanes=self.ppu_lanes)
        except TimeoutError as error:
            raise DeviceTimeout(f"the {self.name} device did not finish within {budget} "
                                f"cycles ({error})") from None
        self._cycles = cycles
        return output

    @property
    def cycles(self):
        """Cycles of the last exchange (each runs on a fresh device), None before the first."""
        return self._cycles

    def reset(self):
        """Nothing to do: every exchange starts from reset."""
