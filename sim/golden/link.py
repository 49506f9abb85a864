"""Frame-level model of the board side of the serial link (:class:`rtl.link.LinkBridge`).

:class:`LinkModel` takes the bytes a board's UART receives, each with its error flag, and
returns the response frames the board sends and the payloads it hands to the accelerator, as
:mod:`firmware.link` specifies them. The framing and checks are :mod:`firmware.link`'s own
(:class:`~firmware.link.SlipDecoder`, :func:`~firmware.link.decode_request`,
:func:`~firmware.link.encode_response`); this module adds what the board does with a frame.

Two points go beyond the protocol's text, as the bridge implements them:

* A byte with its error flag set (a UART framing error on it, or bytes lost before it) marks
  the frame it belongs to as ``LINE``-damaged; its data is then decoded as usual. An ``END``
  with the flag set therefore still ends the frame, and a frame ended by it is answered
  (``LINE``) even if its body is empty: bytes were lost.
* The accelerator's output is collected after every executed request: the output bytes
  available then, in order, up to ``max_payload``; any more stay with the accelerator
  (:attr:`LinkModel.pending`) and come first in the next executed request's answer. Timing is
  not modelled: "available" means what the accelerator stand-in returns.

Timing, backpressure and the quiet gap that ends the collection are the RTL's business; the
frames on the wire are bit-exact.
"""

from dataclasses import dataclass, field

from firmware.link import (MAX_PAYLOAD, Flag, FrameError, RawFrame, SlipDecoder, Status,
                           decode_request, encode_response)

__all__ = ["MAX_MAX_PAYLOAD", "LinkResult", "LinkModel"]

#: Largest ``max_payload`` a board can be built with (as :data:`rtl.link.MAX_MAX_PAYLOAD`).
MAX_MAX_PAYLOAD = 65535


@dataclass
class LinkResult:
    """What the board did with some received bytes.

    Attributes
    ----------
    responses : list of bytes
        The response frames sent, each as its wire bytes (``END``, escaped body, ``END``).
    forwarded : list of bytes
        The payload of each executed request, in order, as handed to the accelerator.
    """
    responses: list = field(default_factory=list)
    forwarded: list = field(default_factory=list)

    @property
    def wire(self):
        """Every response's bytes, concatenated: what the board's UART transmits."""
        return b"".join(self.responses)


class LinkModel:
    """The board side of :mod:`firmware.link`, frame by frame.

    The model keeps the state a board keeps between frames (the last executed seq, the kept
    answer, the SLIP decoder's state and the accelerator's uncollected output), so received
    bytes can be fed in any number of calls.

    Parameters
    ----------
    max_payload : int
        The board's largest payload, 1 to :data:`MAX_MAX_PAYLOAD`.

    Attributes
    ----------
    last_seq : int or None
        The seq of the last executed request; None after reset.
    kept : bytes
        The answer of the last executed request, replayed with ``REPEAT``.
    pending : bytearray
        Accelerator output not collected yet.
    """
    def __init__(self, *, max_payload=MAX_PAYLOAD):
        if not isinstance(max_payload, int) or isinstance(max_payload, bool):
            raise TypeError(f"max_payload must be an integer, not {max_payload!r}")
        if not 1 <= max_payload <= MAX_MAX_PAYLOAD:
            raise ValueError(f"max_payload must be between 1 and {MAX_MAX_PAYLOAD}, "
                             f"not {max_payload!r}")
        self.max_payload = max_payload
        self.last_seq = None
        self.kept = b""
        self.pending = bytearray()
        self._decoder = SlipDecoder()
        self._line = False

    def receive(self, wire, accelerator=None, *, errors=()):
        """Process the received bytes ``wire``; return a :class:`LinkResult`.

        Parameters
        ----------
        wire : bytes-like
            The bytes from the UART, in order.
        accelerator : callable or None
            The accelerator stand-in: called with each executed request's payload (bytes), it
            returns the output bytes that the accelerator makes available in answer (possibly
            none). If it has an ``idle`` attribute, that is read when each response is sent
            (true: no instruction in flight); otherwise the accelerator counts as idle. None:
            an accelerator that never answers.
        errors : collection of int
            Indices into ``wire`` of the bytes received with their error flag set.
        """
        wire = bytes(wire)
        errors = set(errors)
        if any(not isinstance(index, int) or not 0 <= index < len(wire) for index in errors):
            raise ValueError("errors must hold indices into wire")
        result = LinkResult()
        for index, byte in enumerate(wire):
            error = index in errors
            self._line |= error
            frames = self._decoder.feed(bytes([byte]))
            if not frames and error and not self._decoder.pending:
                frames = [RawFrame(b"")]            # an END with bytes lost before it
            for frame in frames:                    # at most one: this byte ended it
                self._frame(frame, self._line, accelerator, result)
            if frames or not self._decoder.pending:
                self._line = False
        return result

    def _frame(self, frame, line, accelerator, result):
        if line:
            self._respond(0, Status.LINE, b"", accelerator, result)
            return
        try:
            request = decode_request(frame, max_payload=self.max_payload)
        except FrameError as error:
            self._respond(0, error.status, b"", accelerator, result)
            return
        if request.seq == self.last_seq:
            self._respond(request.seq, Status.REPEAT, self.kept, accelerator, result)
            return
        payload = bytes(request.payload)
        result.forwarded.append(payload)
        if accelerator is not None:
            self.pending += bytes(accelerator(payload))
        self.kept = bytes(self.pending[:self.max_payload])
        del self.pending[:self.max_payload]
        self.last_seq = request.seq
        self._respond(request.seq, Status.OK, self.kept, accelerator, result)

    def _respond(self, seq, status, payload, accelerator, result):
        idle = not self.pending and bool(getattr(accelerator, "idle", True))
        flags = Flag.IDLE if idle else Flag(0)
        result.responses.append(encode_response(seq, status, flags, payload,
                                                max_payload=self.max_payload))
