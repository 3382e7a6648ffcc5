"""A TCP proxy on loopback that sits between the client and a server and misbehaves on request: it can refuse
WebSocket upgrades while passing plain HTTP (a proxy without upgrade support), and cut every connection now."""

from __future__ import annotations

import asyncio
import threading


class FaultProxy:
    def __init__(self, upstream_port: int, host: str = "127.0.0.1", port: int = 0) -> None:
        self.upstream_port = upstream_port
        self.host, self.port = host, port
        self.block_websocket = False
        self.websocket_attempts = 0
        self._writers: set[asyncio.StreamWriter] = set()
        self._loop = asyncio.new_event_loop()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fault-proxy", daemon=True)
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the fault proxy did not start")

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        self._server = self._loop.run_until_complete(asyncio.start_server(self._handle, self.host, self.port))
        self.port = self._server.sockets[0].getsockname()[1]
        self._ready.set()
        self._loop.run_forever()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        up_writer = None
        try:
            # A WebSocket is always its own TCP connection, so its first request line tells them apart.
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
            if b"upgrade: websocket" in head.lower():
                self.websocket_attempts += 1
                if self.block_websocket:
                    writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
                    await writer.drain()
                    return
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
            self._writers.add(up_writer)
            up_writer.write(head)
            await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
            pass
        finally:
            for w in (writer, up_writer):
                if w is not None:
                    self._writers.discard(w)
                    w.close()

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        try:
            while data := await src.read(65536):
                dst.write(data)
                await dst.drain()
        finally:
            dst.close()

    def cut_all(self) -> None:
        """Drops every connection through the proxy (no close frame, like a network failure)."""

        def cut():
            for w in list(self._writers):
                w.transport.abort()

        self._loop.call_soon_threadsafe(cut)

    def close(self) -> None:
        def stop():
            self._server.close()
            for w in list(self._writers):
                w.transport.abort()
            self._loop.stop()

        self._loop.call_soon_threadsafe(stop)
        self._thread.join(10)
        self._loop.close()
