"""``boards.program`` and ``puce program``: the programmer's command line and its errors.

No board is needed: the tests inject a fake ``runner`` and ``which``, or put a fake programmer
(a shell script that records its arguments) on ``PATH``.
"""

import stat
import subprocess
from pathlib import Path

import pytest

from boards.program import INSTALL_HINTS, ProgramError, program, program_command
from boards.targets import BOARDS
from firmware.cli import main

#: The exact command lines, per board: (SRAM, flash), the bitstream's path follows.
COMMANDS = {
    "icebreaker": (["iceprog", "-S"], ["iceprog"]),
    "ulx3s-85f": (["openFPGALoader", "-b", "ulx3s"], ["openFPGALoader", "-b", "ulx3s", "-f"]),
    "tangnano9k": (["openFPGALoader", "-b", "tangnano9k"],
                   ["openFPGALoader", "-b", "tangnano9k", "-f"]),
}
SUFFIXES = {"icebreaker": ".bin", "ulx3s-85f": ".bit", "tangnano9k": ".fs"}


class FakeTools:
    """A ``runner`` that records the commands and a ``which`` that knows some tools."""

    def __init__(self, installed=("iceprog", "openFPGALoader"), returncode=0):
        self.installed = set(installed)
        self.returncode = returncode
        self.commands = []
        self.asked = []

    def which(self, name):
        self.asked.append(name)
        return f"/usr/bin/{name}" if name in self.installed else None

    def run(self, command, **kwargs):
        self.commands.append(list(command))
        return subprocess.CompletedProcess(command, self.returncode)


def bitstream_file(folder, board, name="puce"):
    path = Path(folder) / f"{name}{SUFFIXES[board]}"
    path.write_bytes(b"\xff\x00\x00\xff" * 64)
    return path


def test_every_board_is_covered():
    assert set(COMMANDS) == set(BOARDS)
    assert {name: board.bitstream for name, board in BOARDS.items()} == SUFFIXES


@pytest.mark.parametrize("flash", [False, True], ids=["sram", "flash"])
@pytest.mark.parametrize("board", list(COMMANDS))
def test_command_line(board, flash, tmp_path):
    path = bitstream_file(tmp_path, board)
    tools = FakeTools()
    command = program(board, path, flash=flash, runner=tools.run, which=tools.which)
    expected = COMMANDS[board][flash] + [str(path)]
    assert command == expected
    assert tools.commands == [expected]
    assert tools.asked == [expected[0]]
    assert program_command(board, path, flash=flash) == expected
    # A Board works as well as its name.
    tools = FakeTools()
    program(BOARDS[board], path, flash=flash, runner=tools.run, which=tools.which)
    assert tools.commands == [expected]


def test_icebreaker_sram_load_uses_iceprog_s(tmp_path):
    # iceprog without -S writes the flash; the SRAM load must have it.
    path = bitstream_file(tmp_path, "icebreaker")
    tools = FakeTools()
    program("icebreaker", path, runner=tools.run, which=tools.which)
    assert tools.commands[0][:2] == ["iceprog", "-S"]
    program("icebreaker", path, flash=True, runner=tools.run, which=tools.which)
    assert "-S" not in tools.commands[1]


@pytest.mark.parametrize("board, tool, hints", [
    ("icebreaker", "iceprog", ["apt install fpga-icestorm"]),
    ("ulx3s-85f", "openFPGALoader",
     ["apt install openfpgaloader", "https://github.com/trabucayre/openFPGALoader"]),
    ("tangnano9k", "openFPGALoader",
     ["apt install openfpgaloader", "https://github.com/trabucayre/openFPGALoader"]),
])
@pytest.mark.parametrize("flash", [False, True], ids=["sram", "flash"])
def test_missing_tool(board, tool, hints, flash, tmp_path):
    path = bitstream_file(tmp_path, board)
    tools = FakeTools(installed=())
    with pytest.raises(ProgramError) as info:
        program(board, path, flash=flash, runner=tools.run, which=tools.which)
    message = str(info.value)
    assert message.startswith(f"{tool} is not installed (not found on PATH)")
    assert BOARDS[board].title in message
    for hint in hints:
        assert hint in message
    assert "Debian/Ubuntu" in message
    assert tools.commands == []
    assert set(INSTALL_HINTS) == {"iceprog", "openFPGALoader"}


@pytest.mark.parametrize("board", list(COMMANDS))
def test_missing_bitstream(board, tmp_path):
    path = tmp_path / "nowhere" / f"puce{SUFFIXES[board]}"
    tools = FakeTools()
    with pytest.raises(ProgramError) as info:
        program(board, path, runner=tools.run, which=tools.which)
    assert str(info.value) == (f"no bitstream {path}: build it first with `puce build --board "
                               f"{board}` (or give its path with --bitstream)")
    assert tools.commands == []


@pytest.mark.parametrize("board, wrong", [
    ("icebreaker", ".bit"), ("icebreaker", ".fs"), ("icebreaker", ".asc"),
    ("ulx3s-85f", ".bin"), ("ulx3s-85f", ".fs"), ("ulx3s-85f", ".svf"),
    ("tangnano9k", ".bin"), ("tangnano9k", ".bit"), ("tangnano9k", ""),
])
def test_wrong_suffix(board, wrong, tmp_path):
    path = tmp_path / f"puce{wrong}"
    path.write_bytes(b"\x00" * 64)
    tools = FakeTools()
    with pytest.raises(ProgramError) as info:
        program(board, path, runner=tools.run, which=tools.which)
    message = str(info.value)
    assert message.startswith(f"{path} is not a bitstream for the {BOARDS[board].title}")
    family = {"icebreaker": "iCE40", "ulx3s-85f": "ECP5", "tangnano9k": "Gowin"}[board]
    assert f"its {family} FPGA ({BOARDS[board].device}) takes a {SUFFIXES[board]} file" \
        in message
    assert tools.commands == []


def test_directory_and_empty_bitstream(tmp_path):
    tools = FakeTools()
    folder = tmp_path / "puce.bin"
    folder.mkdir()
    with pytest.raises(ProgramError, match="is not a file"):
        program("icebreaker", folder, runner=tools.run, which=tools.which)
    empty = tmp_path / "empty.bit"
    empty.touch()
    with pytest.raises(ProgramError, match="is empty"):
        program("ulx3s-85f", empty, runner=tools.run, which=tools.which)
    assert tools.commands == []


def test_tool_fails(tmp_path):
    path = bitstream_file(tmp_path, "tangnano9k")
    tools = FakeTools(returncode=1)
    with pytest.raises(ProgramError, match=r"^openFPGALoader -b tangnano9k .*puce\.fs failed "
                                           r"\(exit code 1\); is the Sipeed Tang Nano 9K "
                                           r"plugged in"):
        program("tangnano9k", path, runner=tools.run, which=tools.which)


def test_unknown_board(tmp_path):
    with pytest.raises(ValueError, match="unknown board 'nope'; known boards: icebreaker, "
                                         "ulx3s-85f, tangnano9k"):
        program("nope", tmp_path / "puce.bin", runner=FakeTools().run,
                which=FakeTools().which)
    with pytest.raises(TypeError, match="board must be a board name"):
        program(3, tmp_path / "puce.bin")


# --- puce program ----------------------------------------------------------------------------

@pytest.fixture
def fake_path(tmp_path, monkeypatch):
    """An empty folder that is all of ``PATH``: no programmer is installed."""
    folder = tmp_path / "bin"
    folder.mkdir()
    monkeypatch.setenv("PATH", str(folder))
    return folder


def install_fake_tool(folder, name):
    """A shell script called ``name`` that writes its arguments, one a line, to name.args."""
    script = folder / name
    script.write_text(f'#!/bin/sh\nfor a in "$@"; do echo "$a"; done > "{folder}/{name}.args"\n')
    script.chmod(script.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return folder / f"{name}.args"


@pytest.mark.parametrize("board, tool, hint", [
    ("icebreaker", "iceprog", "apt install fpga-icestorm"),
    ("ulx3s-85f", "openFPGALoader", "apt install openfpgaloader"),
])
def test_cli_missing_tool(board, tool, hint, fake_path, tmp_path, capsys):
    path = bitstream_file(tmp_path, board)
    assert main(["program", "--board", board, "--bitstream", str(path)]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    lines = err.splitlines()
    assert lines[-1].startswith(f"puce program: error: {tool} is not installed")
    assert hint in lines[-1]
    assert "Traceback" not in err


def test_cli_runs_the_programmer(fake_path, tmp_path, capsys):
    args = install_fake_tool(fake_path, "openFPGALoader")
    path = bitstream_file(tmp_path, "ulx3s-85f")
    assert main(["program", "--board", "ulx3s-85f", "--bitstream", str(path)]) == 0
    assert args.read_text().splitlines() == ["-b", "ulx3s", str(path)]
    assert main(["program", "--board", "ulx3s-85f", "--bitstream", str(path), "--flash"]) == 0
    assert args.read_text().splitlines() == ["-b", "ulx3s", "-f", str(path)]
    err = capsys.readouterr().err
    assert "to the Radiona ULX3S (85F)'s FPGA (SRAM)" in err
    assert "configuration flash" in err


def test_cli_default_bitstream(fake_path, tmp_path, monkeypatch, capsys):
    # Without --bitstream: build/<board>-<R>x<C>/puce<suffix> (the board's size, or --rows and
    # --cols), or DIR/puce<suffix> with --out.
    args = install_fake_tool(fake_path, "iceprog")
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    board = BOARDS["icebreaker"]
    default = Path("build") / f"icebreaker-{board.geometry.rows}x{board.geometry.cols}"
    default.mkdir(parents=True)
    bitstream_file(default, "icebreaker")
    assert main(["program", "--board", "icebreaker"]) == 0
    assert args.read_text().splitlines() == ["-S", str(default / "puce.bin")]

    assert main(["program", "--board", "icebreaker", "--rows", "2", "--cols", "3"]) == 1
    err = capsys.readouterr().err
    assert "error: no bitstream build/icebreaker-2x3/puce.bin: build it first" in err

    other = tmp_path / "elsewhere"
    other.mkdir()
    bitstream_file(other, "icebreaker")
    assert main(["program", "--board", "icebreaker", "--out", str(other), "--flash"]) == 0
    assert args.read_text().splitlines() == [str(other / "puce.bin")]


@pytest.mark.parametrize("argv, message", [
    (["program"], "--board is required; known boards: icebreaker, ulx3s-85f, tangnano9k"),
    (["program", "--board", "de10"],
     "unknown board 'de10'; known boards: icebreaker, ulx3s-85f, tangnano9k"),
    (["program", "--board", "icebreaker", "--bitstream", "a.bin", "--out", "b"],
     "give --bitstream or --out, not both"),
    (["program", "--board", "icebreaker", "--rows", "x"], "--rows expects an integer, not 'x'"),
    (["program", "--board", "icebreaker", "--bitstream", "puce.bit"],
     "puce.bit is not a bitstream for the 1BitSquared iCEBreaker"),
])
def test_cli_bad_arguments(argv, message, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(tmp_path)
    install = tmp_path / "bin"
    install.mkdir()
    install_fake_tool(install, "iceprog")
    monkeypatch.setenv("PATH", str(install))
    assert main(argv) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.splitlines()[-1].startswith(f"puce program: error: {message}")
    assert "Traceback" not in err
