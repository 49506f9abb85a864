"""The functional model as a backend: exact answers at once, no timing.

:class:`ModelBackend` runs programs on :class:`sim.golden.accelerator.AcceleratorModel`. It
keeps the model (memories, weight tiles, counters, a half-received instruction) across
exchanges, like a device would. The CYCLES and STALL_* counters read 0 (``timed`` is False);
MXU_BUSY and INSTRUCTIONS are exact.
"""

from sim.golden.accelerator import AcceleratorModel

from . import Backend

__all__ = ["ModelBackend"]


class ModelBackend(Backend):
    """:class:`~sim.golden.accelerator.AcceleratorModel` behind the :class:`Backend` interface.

    Parameters
    ----------
    geometry : firmware.isa.Geometry
    max_cycles : int or None
        Accepted, like every backend's, and ignored: the model has no clock.
    """
    name = "model"
    timed = False

    def __init__(self, geometry, *, max_cycles=None):
        super().__init__(geometry)
        self.model = AcceleratorModel(geometry)

    def exchange(self, program, *, max_cycles=None):
        """Run ``program`` on the model; ``max_cycles`` is accepted and ignored (no clock)."""
        self._check_open()
        return self.model.run(bytes(program))

    def reset(self):
        self.model = AcceleratorModel(self.geometry)
