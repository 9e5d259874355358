"""A TCP proxy the test controls, to put an outage between a client and a server.

``TcpProxy(target).start()`` listens on a free loopback port and forwards to ``target``
(TLS passes through untouched, so the client still verifies the server). ``cut(mode)``
injects an outage: ``refuse`` resets every open connection and every new one (the client
sees connection errors at once), ``blackhole`` stops forwarding in both directions without
closing anything (the client's requests hang until its own timeouts). ``heal()`` ends it;
connections opened afterwards work again. No pytest dependency.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Literal

from .procs import Managed

__all__ = ["TcpProxy"]

Mode = Literal["refuse", "blackhole"]


class TcpProxy(Managed):
    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = 0
        self._mode: Mode | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._open: set[asyncio.StreamWriter] = set()
        self._flowing = asyncio.Event()
        self._flowing.set()

    def start(self) -> TcpProxy:
        loop = asyncio.new_event_loop()
        self._loop = loop
        self._thread = threading.Thread(target=loop.run_forever, name="tcp-proxy", daemon=True)
        self._thread.start()
        self.port = asyncio.run_coroutine_threadsafe(self._listen(), loop).result(timeout=10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._close(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._loop = None

    def cut(self, mode: Mode) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._cut(mode), self._loop).result(timeout=10)

    def heal(self) -> None:
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._heal(), self._loop).result(timeout=10)

    async def _heal(self) -> None:
        self._mode = None
        self._flowing.set()

    async def _cut(self, mode: Mode) -> None:
        self._mode = mode
        if mode == "blackhole":
            self._flowing.clear()
        if mode == "refuse":
            for writer in list(self._open):
                writer.transport.abort()

    async def _listen(self) -> int:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._open):
            writer.transport.abort()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._mode == "refuse":
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            return
        self._open |= {writer, up_writer}
        try:
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        finally:
            self._open -= {writer, up_writer}
            for w in (writer, up_writer):
                w.transport.abort()

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while data := await reader.read(65536):
                await self._flowing.wait()  # blackhole: hold the bytes, nothing gets through
                writer.write(data)
                await writer.drain()
        writer.transport.abort()
