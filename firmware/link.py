"""The serial link protocol: how the host's bytes reach a board over a UART, reliably.

A board carries the accelerator's byte streams (:mod:`firmware.isa`) over one UART. A serial
line drops, flips and invents bytes, so the host never sends raw program bytes: it sends
**frames**, each checked by a CRC, and the board answers every frame with exactly one frame.
The host talks, the board answers (stop and wait); the board never sends on its own.

Framing (SLIP, RFC 1055)
------------------------
Each frame is sent as ``END body END`` with the body escaped: ``END`` (0xC0) becomes ``ESC
ESC_END`` (0xDB 0xDC) and ``ESC`` (0xDB) becomes ``ESC ESC_ESC`` (0xDB 0xDD). An empty frame
(two ``END`` in a row) is ignored. The leading ``END`` closes any noise received before the
frame as a frame of its own (which the board rejects), so noise never corrupts a request.

Bodies
------
Request (host to board)::

    seq (1 byte) | payload (0 .. max_payload bytes) | crc (2 bytes)

Response (board to host)::

    seq (1 byte) | status (1 byte) | flags (1 byte) | payload (0 .. max_payload bytes) | crc

``crc`` is CRC-16/CCITT-FALSE (polynomial 0x1021, initial value 0xFFFF, no reflection, no
final XOR) of everything before it, sent most significant byte first; the CRC of a whole
body, CRC included, is therefore 0. ``max_payload`` is a build parameter of the board
(:data:`MAX_PAYLOAD` by default).

What the board does with a frame
--------------------------------
* **A good request with a new seq** (any seq other than the last one executed, or any seq
  after reset): its payload goes to the accelerator's input while the board collects the
  accelerator's output bytes (up to ``max_payload``, until the payload is in and the output
  has been quiet for a few cycles); it keeps them for a replay and answers ``OK`` with them.
  Output beyond ``max_payload`` waits in the accelerator for the next request, so the host
  must not send, in one request, input that the accelerator can only take after more than
  ``max_payload`` bytes of output have left it (the ``serial`` backend ends a request after
  every instruction that answers, and polls until the board is idle before going on).
* **A good request with the seq last executed**: the payload is *not* executed again (the
  host is retrying because the answer was lost); the board replays the kept answer with
  status ``REPEAT``.
* **A bad frame**: nothing is executed and the kept answer is unchanged; the board answers
  with an error status (:class:`Status`), seq 0 and no payload. The errors, by priority:
  ``LINE`` (a byte of the frame had a UART framing error, or bytes were lost to an overrun),
  ``BAD_ESCAPE`` (``ESC`` followed by anything but ``ESC_END`` / ``ESC_ESC``),
  ``OVERLONG`` (a body longer than ``max_payload + 3`` bytes), ``TRUNCATED`` (a body shorter
  than 3 bytes), ``BAD_CRC``.

``flags`` bit 0 (:attr:`Flag.IDLE`) is set when, as the answer was sent, the accelerator had
taken every byte, had no instruction in flight and no output waiting: nothing more will
come until the host sends more.

What the host does
------------------
It numbers its requests (seq modulo 256) and sends one at a time. It retries the same request
(same seq, same payload) when the answer has a bad CRC, is an error status, or does not come
within a timeout; answers whose seq is not the outstanding one are stale and ignored. To start
a session it sends two empty requests with consecutive seqs: the second is certainly new to
the board, whatever the board executed last. :class:`Link` implements this, and the
``serial`` backend (:mod:`firmware.backends.serial`) builds on it; docs/boards.md explains it.
"""

import binascii
import enum
from dataclasses import dataclass

__all__ = [
    "END", "ESC", "ESC_END", "ESC_ESC", "MAX_PAYLOAD", "REQUEST_OVERHEAD", "RESPONSE_OVERHEAD",
    "Status", "Flag", "crc16", "slip_encode", "SlipDecoder", "RawFrame", "FrameError",
    "Request", "Response", "encode_request", "decode_request", "encode_response",
    "decode_response", "Link", "LinkError",
]

END, ESC, ESC_END, ESC_ESC = 0xC0, 0xDB, 0xDC, 0xDD

#: Default largest payload of one frame, in bytes (a build parameter of the board).
MAX_PAYLOAD = 256
#: Body bytes of a request besides its payload: seq and CRC.
REQUEST_OVERHEAD = 3
#: Body bytes of a response besides its payload: seq, status, flags and CRC.
RESPONSE_OVERHEAD = 5


class Status(enum.IntEnum):
    """Second byte of a response body."""
    OK         = 0x00   #: the request was executed; the payload is the accelerator's output
    REPEAT     = 0x01   #: the seq was the last executed one: not executed, answer replayed
    LINE       = 0x80   #: a UART framing error or overrun inside the frame
    BAD_ESCAPE = 0x81   #: ESC followed by a byte other than ESC_END or ESC_ESC
    OVERLONG   = 0x82   #: the body is longer than max_payload + 3 bytes
    TRUNCATED  = 0x83   #: the body is shorter than 3 bytes
    BAD_CRC    = 0x84   #: the CRC does not match

    @property
    def is_error(self):
        return self >= 0x80


class Flag(enum.IntFlag):
    """Third byte of a response body."""
    IDLE = 0x01     #: the accelerator is idle with no output waiting


def crc16(data, crc=0xFFFF):
    """CRC-16/CCITT-FALSE of ``data`` (continuing from ``crc``)."""
    return binascii.crc_hqx(bytes(data), crc)


def slip_encode(body):
    """``body`` as one SLIP frame on the wire: ``END``, the escaped body, ``END``."""
    out = bytearray([END])
    for byte in bytes(body):
        if byte == END:
            out += bytes([ESC, ESC_END])
        elif byte == ESC:
            out += bytes([ESC, ESC_ESC])
        else:
            out.append(byte)
    out.append(END)
    return bytes(out)


@dataclass(frozen=True)
class RawFrame:
    """A frame as the SLIP layer delivers it: the unescaped body and whether an escape in it
    was bad (``body`` then holds the bytes that did decode)."""
    body: bytes
    bad_escape: bool = False


class SlipDecoder:
    """Splits a byte stream into SLIP frames, the way the board's receiver does.

    :meth:`feed` any number of bytes; it returns the frames completed by them. Empty frames are
    dropped. After ``ESC`` a byte other than ``ESC_END`` / ``ESC_ESC`` marks the frame bad and
    is itself dropped; an ``END`` right after ``ESC`` still ends the frame (marked bad).
    """
    def __init__(self):
        self._body = bytearray()
        self._escaped = False
        self._bad = False

    @property
    def pending(self):
        """True while part of a frame has been received."""
        return bool(self._body) or self._escaped or self._bad

    def feed(self, data):
        frames = []
        for byte in bytes(data):
            if byte == END:
                if self._escaped:
                    self._bad = True
                if self._body or self._bad:
                    frames.append(RawFrame(bytes(self._body), self._bad))
                self._body = bytearray()
                self._escaped = self._bad = False
            elif self._escaped:
                self._escaped = False
                if byte == ESC_END:
                    self._body.append(END)
                elif byte == ESC_ESC:
                    self._body.append(ESC)
                else:
                    self._bad = True
            elif byte == ESC:
                self._escaped = True
            else:
                self._body.append(byte)
        return frames


class FrameError(ValueError):
    """A frame that must be rejected; ``status`` says why (an error :class:`Status`)."""
    def __init__(self, status, message):
        super().__init__(message)
        self.status = Status(status)


@dataclass(frozen=True)
class Request:
    seq: int
    payload: bytes = b""


@dataclass(frozen=True)
class Response:
    seq: int
    status: Status
    flags: Flag = Flag(0)
    payload: bytes = b""

    @property
    def idle(self):
        return bool(self.flags & Flag.IDLE)


def _check_seq(seq):
    if not isinstance(seq, int) or isinstance(seq, bool) or not 0 <= seq <= 255:
        raise ValueError(f"seq must be an integer from 0 to 255, not {seq!r}")


def _check_payload(payload, max_payload):
    if not isinstance(payload, (bytes, bytearray, memoryview)):
        raise TypeError(f"payload must be bytes, not {type(payload).__name__}")
    if len(payload) > max_payload:
        raise ValueError(f"a payload of {len(payload)} bytes exceeds the frame's "
                         f"{max_payload}-byte limit")


def _with_crc(body):
    return body + crc16(body).to_bytes(2, "big")


def encode_request(seq, payload=b"", *, max_payload=MAX_PAYLOAD):
    """The wire bytes (SLIP frame) of a request."""
    _check_seq(seq)
    _check_payload(payload, max_payload)
    return slip_encode(_with_crc(bytes([seq]) + bytes(payload)))


def encode_response(seq, status, flags=0, payload=b"", *, max_payload=MAX_PAYLOAD):
    """The wire bytes (SLIP frame) of a response."""
    _check_seq(seq)
    _check_payload(payload, max_payload)
    body = bytes([seq, int(Status(status)), int(Flag(flags))]) + bytes(payload)
    return slip_encode(_with_crc(body))


def _check_body(frame, overhead, max_payload):
    """The status a board (or host) gives a received frame that is not LINE-damaged."""
    if frame.bad_escape:
        return Status.BAD_ESCAPE
    if len(frame.body) > max_payload + overhead:
        return Status.OVERLONG
    if len(frame.body) < overhead:
        return Status.TRUNCATED
    if crc16(frame.body) != 0:
        return Status.BAD_CRC
    return Status.OK


def decode_request(frame, *, max_payload=MAX_PAYLOAD):
    """The :class:`Request` in a :class:`RawFrame`; :class:`FrameError` if it is bad."""
    status = _check_body(frame, REQUEST_OVERHEAD, max_payload)
    if status != Status.OK:
        raise FrameError(status, f"bad request frame: {status.name}")
    return Request(frame.body[0], frame.body[1:-2])


def decode_response(frame, *, max_payload=MAX_PAYLOAD):
    """The :class:`Response` in a :class:`RawFrame`; :class:`FrameError` if it is bad (a
    response with an unknown status byte is BAD_CRC-like garbage: also a FrameError)."""
    status = _check_body(frame, RESPONSE_OVERHEAD, max_payload)
    if status != Status.OK:
        raise FrameError(status, f"bad response frame: {status.name}")
    body = frame.body
    try:
        code = Status(body[1])
    except ValueError:
        raise FrameError(Status.BAD_CRC, f"response with unknown status 0x{body[1]:02x}") \
            from None
    return Response(body[0], code, Flag(body[2] & Flag.IDLE), body[3:-2])


class LinkError(RuntimeError):
    """The board did not answer a request correctly within the retries."""


class Link:
    """The host side of the protocol: numbered requests, retried until a good answer comes.

    Parameters
    ----------
    transport : object
        The line. ``transport.write(data)`` sends bytes; ``transport.read(timeout)`` returns
        the bytes received within ``timeout`` seconds (as soon as there are some; ``b""`` if
        none came). ``transport.byte_time``, if present, is the seconds one byte takes on the
        line: the answer timeout grows with the frame lengths.
    max_payload : int
        The board's frame payload limit.
    timeout : float
        Seconds to wait for an answer, besides its time on the line.
    retries : int
        Attempts after the first before :class:`LinkError`.

    Attributes
    ----------
    stats : dict
        Counts of ``requests``, ``retries``, ``timeouts``, ``bad_frames`` (answers that failed
        their CRC or framing), ``rejected`` (error statuses from the board), ``repeats``
        (REPEAT answers) and ``stale`` (answers to an earlier request, ignored).
    """
    def __init__(self, transport, *, max_payload=MAX_PAYLOAD, timeout=0.25, retries=8):
        if not hasattr(transport, "write") or not hasattr(transport, "read"):
            raise TypeError(f"transport must have write() and read(timeout), not {transport!r}")
        if isinstance(max_payload, bool) or not isinstance(max_payload, int) or \
                not 1 <= max_payload <= 65535:
            raise ValueError(f"max_payload must be an integer from 1 to 65535, not "
                             f"{max_payload!r}")
        if isinstance(retries, bool) or not isinstance(retries, int) or retries < 0:
            raise ValueError(f"retries must be a non-negative integer, not {retries!r}")
        if not isinstance(timeout, (int, float)) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, not {timeout!r}")
        self.transport = transport
        self.max_payload = max_payload
        self.timeout = timeout
        self.retries = retries
        self.seq = 0
        self.stats = dict.fromkeys(("requests", "retries", "timeouts", "bad_frames",
                                    "rejected", "repeats", "stale"), 0)
        self._decoder = SlipDecoder()
        self._frames = []

    def start(self):
        """Begin a session: two empty requests, so that the next seq is new to the board.

        Returns the accelerator output they collected (left over from an earlier session).
        """
        return self.transact(b"").payload + self.transact(b"").payload

    def _answer_timeout(self, request_length):
        byte_time = getattr(self.transport, "byte_time", 0.0)
        # The request, the longest answer (every byte escaped) and some slack, on the line.
        return self.timeout + byte_time * (request_length + 2 * (self.max_payload +
                                                                 RESPONSE_OVERHEAD) + 16)

    def _next_frame(self, deadline_left):
        """The next frame received within ``deadline_left`` seconds, or None."""
        while not self._frames:
            if deadline_left() <= 0:
                return None
            data = self.transport.read(deadline_left())
            if data:
                self._frames.extend(self._decoder.feed(data))
        return self._frames.pop(0)

    def transact(self, payload=b""):
        """Send one request and return the board's good :class:`Response` to it.

        Raises
        ------
        LinkError
            If no good answer came after ``retries`` retries.
        """
        _check_payload(payload, self.max_payload)
        seq = self.seq
        wire = encode_request(seq, bytes(payload), max_payload=self.max_payload)
        self.stats["requests"] += 1
        problems = []
        for attempt in range(self.retries + 1):
            if attempt:
                self.stats["retries"] += 1
            self.transport.write(wire)
            answer = self._await(seq, self._answer_timeout(len(wire)), problems)
            if answer is not None:
                self.seq = (seq + 1) & 0xFF
                if answer.status == Status.REPEAT:
                    self.stats["repeats"] += 1
                return answer
        raise LinkError(f"no good answer to request {seq} after {self.retries + 1} attempts "
                        f"({', '.join(problems[-3:])})")

    def _await(self, seq, seconds, problems):
        """The good answer to ``seq``, or None when it is time to send the request again.

        After a bad or rejected answer the host keeps listening until the line has been quiet
        for ``seconds``: the rejection may be of noise while the answer to the request is
        still coming, and a request sent while the board is still answering would arrive
        while the board is not listening (and be rejected in turn, again and again).
        """
        clock = getattr(self.transport, "clock", None) or _monotonic
        deadline = clock() + seconds
        failed = False
        while True:
            frame = self._next_frame(lambda: deadline - clock())
            if frame is None:
                if not failed:
                    self.stats["timeouts"] += 1
                    problems.append("timeout")
                return None
            try:
                response = decode_response(frame, max_payload=self.max_payload)
            except FrameError as error:
                self.stats["bad_frames"] += 1
                problems.append(f"bad answer ({error.status.name})")
                failed, deadline = True, clock() + seconds
                continue
            if response.status.is_error:
                # The board rejected a frame: ours, or noise it took for one. Ours goes again
                # once the line is quiet (a copy that did get through is answered REPEAT).
                self.stats["rejected"] += 1
                problems.append(f"board reported {response.status.name}")
                failed, deadline = True, clock() + seconds
                continue
            if response.seq != seq:
                self.stats["stale"] += 1
                continue
            return response


def _monotonic():
    import time
    return time.monotonic()
