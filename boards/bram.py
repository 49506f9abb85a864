"""Block RAM output registers on ECP5: fold the register after a read port into the block RAM.

An ECP5 ``DP16KD`` presents a read 5.8 ns after the clock (nextpnr's figure for the -6 speed
grade) unless it uses its own output register (``REGMODE`` ``OUTREG``), which adds a cycle
and presents it about 1 ns after the clock. Yosys does not map registers into it, so the RTL
puts a plain register right after each read port that should use it
(:func:`rtl.unified_buffer.connect_read_port` with ``output_register``), and this pass moves
that register into the block RAM in Yosys's JSON netlist, before nextpnr reads it.

A read port's register is folded only if every data output of the port in use drives exactly
one flip-flop (``TRELLIS_FF``) and nothing else, and all of those flip-flops have the port's
clock, not inverted, one and the same clock enable (or none), no set or reset, and initial
value 0 (the output register's, after configuration). Outputs that drive nothing (the ninth
bit of a byte, say) do not count. Anything else is left as it is, and the
design stays correct, only slower.

The memory's read must also end at that register: a read port that Yosys made transparent, or
made to return the old row when the entry is written in the same cycle, ends in its emulation
logic instead. Such memories carry :data:`rtl.unified_buffer.COLLISIONS_BYPASSED`, and
:data:`COLLISIONS_UNDEFINED` (a Yosys command for the synthesis script, after the memories are
collected and before they are mapped) tells Yosys that their collisions are undefined.
"""

from rtl.unified_buffer import COLLISIONS_BYPASSED

__all__ = ["COLLISIONS_UNDEFINED", "fold_output_registers"]

#: Yosys: the read port of a memory marked :data:`rtl.unified_buffer.COLLISIONS_BYPASSED` returns
#: undefined data when its entry is written in the same cycle (the RTL repairs that itself).
#: Only memories with one read and one write port carry the mark, so the mask has one bit.
COLLISIONS_UNDEFINED = (f"setparam -set RD_COLLISION_X_MASK 1'b1 "
                        f"t:$mem_v2 a:{COLLISIONS_BYPASSED} %i r:RD_PORTS=1 %i r:WR_PORTS=1 %i")

#: Constant drivers in Yosys's JSON netlists.
_CONSTANTS = ("0", "1", "x", "z")


def _users(module):
    """Map each net bit of ``module`` to the (cell name, port) pairs it feeds; a bit that leaves
    the module counts as a user of its own, ``(None, port name)``."""
    users = {}
    for name, port in module.get("ports", {}).items():
        if port["direction"] != "input":
            for bit in port["bits"]:
                users.setdefault(bit, []).append((None, name))
    cells = module["cells"]
    for name, cell in cells.items():
        for port, bits in cell["connections"].items():
            if cell.get("port_directions", {}).get(port) != "input":
                continue
            for bit in bits:
                if bit not in _CONSTANTS:
                    users.setdefault(bit, []).append((name, port))
    return users


def _param(cell, key, default=""):
    return str(cell["parameters"].get(key, default)).strip()


def _width(value):
    """A Yosys JSON parameter as an int: a string of binary digits, or a number."""
    if isinstance(value, str) and value and set(value) <= {"0", "1"}:
        return int(value, 2)
    return int(value)


def _read_ports(ram):
    """The read ports of a ``DP16KD`` as (port, output pins, REGMODE ports) triples. In its
    36-bit mode (Yosys's pseudo dual-port map) port B reads all 36 bits, the upper half on the
    A pins, and one setting serves both halves: nextpnr makes a ``PDPW16KD``'s ``REGMODE``
    both ``REGMODE_A`` and ``REGMODE_B``, and its ``OCER`` the ``OCEB``."""
    pins = {port: [f"DO{port}{k}" for k in range(18)] for port in "AB"}
    if _width(ram["parameters"].get("DATA_WIDTH_A", 18)) == 36:
        return [("B", pins["A"] + pins["B"], ("A", "B"))]
    return [(port, pins[port], (port,)) for port in "AB"]


def _plain_register(cell, clock):
    """The clock enable net of a flip-flop that the output register can replace, or None if it
    cannot; the string ``"1"`` for a flip-flop without an enable."""
    if cell["type"] != "TRELLIS_FF":
        return None
    connections = cell["connections"]
    if connections.get("CLK") != [clock] or _param(cell, "CLKMUX", "CLK") != "CLK":
        return None
    if _param(cell, "REGSET", "RESET") != "RESET":
        return None
    reset = connections.get("LSR", ["0"])
    if reset != ["0"] and _param(cell, "LSRMUX", "LSR") != "0":
        return None
    enable_mux = _param(cell, "CEMUX", "1")
    if enable_mux == "1":
        return "1"
    if enable_mux != "CE" or len(connections.get("CE", [])) != 1:
        return None
    return connections["CE"][0]


def fold_output_registers(netlist, top):
    """Fold the register after each ``DP16KD`` read port of module ``top`` of the Yosys JSON
    ``netlist`` (a dict, changed in place) into the block RAM; return how many ports took
    their output register and how many flip-flops that removed.
    """
    module = netlist["modules"][top]
    cells = module["cells"]
    users = _users(module)
    folded = removed = 0
    for name in sorted(name for name, cell in cells.items() if cell["type"] == "DP16KD"):
        ram = cells[name]
        for port, pins, modes in _read_ports(ram):
            if any(_param(ram, f"REGMODE_{mode}", "NOREG") != "NOREG" for mode in modes):
                continue
            if ram["connections"].get(f"RST{port}", ["0"]) != ["0"]:
                continue
            clock = ram["connections"].get(f"CLK{port}", [None])[0]
            outputs = {pin: ram["connections"][pin][0] for pin in pins
                       if ram["connections"].get(pin, ["x"])[0] not in _CONSTANTS}
            registers, enables = {}, set()
            for pin, bit in outputs.items():
                fed = users.get(bit, [])
                if not fed:
                    continue
                if len(fed) != 1 or fed[0][0] is None or fed[0][1] != "DI":
                    break
                enable = _plain_register(cells[fed[0][0]], clock)
                if enable is None:
                    break
                registers[pin] = fed[0][0]
                enables.add(enable)
            else:
                if not registers or len(enables) != 1:
                    continue
                # Each register's output net is now driven by the block RAM's pin; the net
                # between them is left with neither driver nor users.
                for pin, register in registers.items():
                    ram["connections"][pin] = cells[register]["connections"]["Q"]
                    del cells[register]
                enable, = enables
                ram["connections"][f"OCE{port}"] = [enable]
                for mode in modes:
                    ram["parameters"][f"REGMODE_{mode}"] = "OUTREG"
                folded += 1
                removed += len(registers)
    return folded, removed
