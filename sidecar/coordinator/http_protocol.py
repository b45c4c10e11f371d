"""The coordinator's HTTP/1.1 server protocol: uvicorn's httptools protocol with a bounded request head.

httptools (llhttp, C) costs a fraction of h11 (pure Python) per request and per relayed frame, but it has no
limit of its own on a request's head: it concatenates a header's pieces until the header ends, so a client could
make it hold any amount. `bounded_httptools(limit)` feeds the parser at most `limit` bytes of one request's head
(request line and headers); a head that has not ended by then is answered `431` (vLLM's error object) and the
connection closed, so no more than `limit` bytes of a head are ever buffered, before any authentication. Bytes
after the head (the body, a pipelined request) pass straight through; the whole-headers check in the
completions relay (`max_header_bytes`, 431) still applies to what is accepted.
"""

from __future__ import annotations

from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from sidecar.coordinator.errors import error_body


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """See the module docstring; `max_head_bytes` is set by `bounded_httptools`."""

    max_head_bytes = 64 * 1024

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._in_head = True  # the next bytes belong to a request's head
        self._head_bytes = 0

    def data_received(self, data: bytes) -> None:
        while self._in_head and data:
            room = self.max_head_bytes - self._head_bytes
            if room <= 0:  # every byte counted so far was head (the head has not ended)
                self._refuse_head()
                return
            piece, data = data[:room], data[room:]
            self._head_bytes += len(piece)
            super().data_received(piece)  # may end the head (on_headers_complete) or close the connection
            if self.transport.is_closing():
                return
        if data:
            super().data_received(data)

    def on_headers_complete(self) -> None:
        self._in_head = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._in_head, self._head_bytes = True, 0  # a pipelined request's head comes next
        super().on_message_complete()

    def _refuse_head(self) -> None:
        body = error_body(431, f"request head exceeds the limit of {self.max_head_bytes} bytes")
        self.transport.write(
            b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n%s" % (len(body), body)
        )
        self.transport.close()


def bounded_httptools(max_head_bytes: int) -> type[BoundedHttpToolsProtocol]:
    """The protocol class for uvicorn's `http` option, with its head limit."""
    return type("BoundedHttpToolsProtocol", (BoundedHttpToolsProtocol,), {"max_head_bytes": max_head_bytes})
