"""A TCP proxy between workers and the broker, for injecting network faults (no toxiproxy here).

Runs an asyncio loop in a thread of the test process. Modes: ``forward`` (normal), ``refuse``
(the listening socket is closed: connections are refused), ``blackhole`` (connections are
accepted and nothing is forwarded either way). ``kill_connections()`` drops every live connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Proxy:
    def __init__(self, target_port: int, port: int | None = None) -> None:
        self.target_port = target_port
        self.port = port or free_port()
        self.mode = "forward"
        self._loop = asyncio.new_event_loop()
        self._server: asyncio.base_events.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        self._call(self._listen())

    def _call(self, coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(10)

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _close_listener(self) -> None:
        # Not Server.wait_closed(): since Python 3.12.1 it also waits for every connection the
        # server accepted to close, and the proxy's connections are closed separately.
        if self._server is not None:
            self._server.close()
            self._server = None

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.mode == "blackhole":
            with contextlib.suppress(Exception):
                while await reader.read(65536):
                    pass
            self._writers.discard(writer)
            writer.close()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            try:
                while data := await src.read(65536):
                    if self.mode == "blackhole":
                        continue
                    dst.write(data)
                    await dst.drain()
            except Exception:
                pass
            finally:
                dst.close()

        await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        self._writers.discard(writer)
        self._writers.discard(up_writer)

    async def _kill(self) -> None:
        for w in list(self._writers):
            with contextlib.suppress(Exception):
                transport = w.transport
                sock = transport.get_extra_info("socket")
                if sock is not None:
                    sock.setsockopt(
                        socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00"
                    )
                transport.abort()
        self._writers.clear()

    def kill_connections(self) -> None:
        self._call(self._kill())

    def refuse(self) -> None:
        self.mode = "refuse"
        self._call(self._close_listener())
        self.kill_connections()

    def blackhole(self) -> None:
        self.mode = "blackhole"
        self.kill_connections()
        if self._server is None:
            self._call(self._listen())

    def forward(self) -> None:
        self.mode = "forward"
        if self._server is None:
            self._call(self._listen())

    async def _cancel_all(self) -> None:
        tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def close(self) -> None:
        self._call(self._close_listener())
        self.kill_connections()
        self._call(self._cancel_all())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()
