"""Load a bitstream into a board's FPGA (SRAM) or write it to the board's configuration flash.

:func:`program` runs the board's programmer (:attr:`boards.targets.Board.programmer`, or
:attr:`~boards.targets.Board.flasher` with ``flash=True``) with the bitstream's path appended::

    iCEBreaker   iceprog -S puce.bin                        (flash: iceprog puce.bin)
    ULX3S        openFPGALoader -b ulx3s puce.bit           (flash: ... -b ulx3s -f puce.bit)
    Tang Nano 9K openFPGALoader -b tangnano9k puce.fs       (flash: ... -b tangnano9k -f puce.fs)

An SRAM load is lost at power-off; the flash keeps the design across power cycles. Before it
runs anything, :func:`program` checks that the tool is installed and that the bitstream exists
and is of the board's kind (its file name suffix, :attr:`~boards.targets.Board.bitstream`), and
raises a :class:`ProgramError` that says what to do otherwise.
"""

import shutil
import subprocess
from pathlib import Path

from .targets import Board, get_board

__all__ = ["ProgramError", "INSTALL_HINTS", "program", "program_command"]


class ProgramError(RuntimeError):
    """The board could not be programmed: a missing tool or bitstream, or the tool failed."""


#: How to install each programmer.
INSTALL_HINTS = {
    "iceprog": "on Debian/Ubuntu: `apt install fpga-icestorm` (iceprog is part of Project "
               "IceStorm, https://github.com/YosysHQ/icestorm)",
    "openFPGALoader": "on Debian/Ubuntu: `apt install openfpgaloader`, or build it from "
                      "https://github.com/trabucayre/openFPGALoader",
}

_FAMILY_NAMES = {"ice40": "iCE40", "ecp5": "ECP5", "gowin": "Gowin"}


def _board(board):
    if isinstance(board, str):
        return get_board(board)
    if not isinstance(board, Board):
        raise TypeError(f"board must be a board name or a boards.targets.Board, not {board!r}")
    return board


def program_command(board, bitstream, *, flash=False):
    """The command line that :func:`program` runs, as a list (no checks)."""
    board = _board(board)
    return [*(board.flasher if flash else board.programmer), str(bitstream)]


def _check_bitstream(board, bitstream):
    path = Path(bitstream)
    family = _FAMILY_NAMES.get(board.family, board.family)
    if path.suffix.lower() != board.bitstream:
        raise ProgramError(
            f"{path} is not a bitstream for the {board.title}: its {family} FPGA "
            f"({board.device}) takes a {board.bitstream} file, as `puce build --board "
            f"{board.name}` writes")
    if not path.exists():
        raise ProgramError(f"no bitstream {path}: build it first with `puce build --board "
                           f"{board.name}` (or give its path with --bitstream)")
    if not path.is_file():
        raise ProgramError(f"the bitstream {path} is not a file")
    if path.stat().st_size == 0:
        raise ProgramError(f"the bitstream {path} is empty: rebuild it with `puce build "
                           f"--board {board.name}`")
    return path


def program(board, bitstream, *, flash=False, runner=subprocess.run, which=shutil.which):
    """Load ``bitstream`` into ``board``'s FPGA, or write it to its flash with ``flash=True``.

    Parameters
    ----------
    board : str or boards.targets.Board
    bitstream : path
        The bitstream file (``.bin`` for iCE40, ``.bit`` for ECP5, ``.fs`` for Gowin).
    flash : bool
        Write the configuration flash (kept across power cycles) instead of the SRAM.
    runner : callable
        Runs the command (``subprocess.run``'s signature); returns an object with a
        ``returncode``.
    which : callable
        Finds a tool on ``PATH`` (``shutil.which``'s signature).

    Returns
    -------
    list of str
        The command that ran.

    Raises
    ------
    ValueError, TypeError
        For an unknown board.
    ProgramError
        If the tool is not installed, the bitstream is missing or of another kind, or the tool
        fails.
    """
    board = _board(board)
    command = program_command(board, bitstream, flash=flash)
    tool = command[0]
    if which(tool) is None:
        hint = INSTALL_HINTS.get(tool, "see its documentation")
        raise ProgramError(f"{tool} is not installed (not found on PATH); it programs the "
                           f"{board.title}. Install it {hint}")
    _check_bitstream(board, bitstream)
    try:
        result = runner(command)
    except OSError as error:
        raise ProgramError(f"cannot run {tool}: {error.strerror or error}") from None
    code = getattr(result, "returncode", 0)
    if code != 0:
        raise ProgramError(f"{' '.join(command)} failed (exit code {code}); is the "
                           f"{board.title} plugged in, and may this user open its USB "
                           f"device (udev rules)?")
    return command
