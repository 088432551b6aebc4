"""A loopback TCP relay that can hold the traffic of the connections it already carries.

The token cache's listener is put behind one (its Redis URL, or the PostgreSQL port it
connects to), so a test can make the listener *behind* for real — the server sends, the
bytes wait here — or keep it *disconnected* (new connections are closed at once), and
can name the listener's connection on the server (the relay's own local port).
"""

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress

_CHUNK = 65536
_ACCEPT_POLL_SECONDS = 0.05


class _Link:
    """One client connection and its upstream, pumped both ways by two threads."""

    def __init__(self, client: socket.socket, upstream: socket.socket) -> None:
        self.client, self.upstream = client, upstream
        self.upstream_port = int(upstream.getsockname()[1])
        self.flowing = threading.Event()
        self.flowing.set()
        self.closed = threading.Event()
        for source, sink in ((client, upstream), (upstream, client)):
            threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while not self.closed.is_set():
                data = source.recv(_CHUNK)
                if not data:
                    break
                self.flowing.wait()  # held here while paused: read, not passed on
                if self.closed.is_set():
                    break
                sink.sendall(data)
        except OSError:
            pass
        finally:
            self.close()

    def close(self) -> None:
        self.closed.set()
        self.flowing.set()
        for sock in (self.client, self.upstream):
            with suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()


class Relay:
    """Relay ``127.0.0.1:port`` to *target*; ``pause``/``resume`` hold what flows."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(_ACCEPT_POLL_SECONDS)
        self.port = int(self._server.getsockname()[1])
        self.accepted = 0  # connections accepted and relayed
        self.refusing = False
        self._links: list[_Link] = []
        self._lock = threading.Lock()
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _address = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if self.refusing:
                client.close()  # the connection opens, then ends before a byte is answered
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self.accepted += 1
                self._links.append(_Link(client, upstream))

    def links(self) -> list[_Link]:
        """The connections open now."""
        with self._lock:
            self._links = [link for link in self._links if not link.closed.is_set()]
            return list(self._links)

    def upstream_ports(self) -> list[int]:
        """Local ports of the open upstream connections: how the server names each client."""
        return [link.upstream_port for link in self.links()]

    def pause(self) -> list[_Link]:
        """Hold the traffic of every connection open now (later ones flow); return them."""
        held = self.links()
        for link in held:
            link.flowing.clear()
        return held

    def resume(self) -> None:
        for link in self.links():
            link.flowing.set()

    def close(self) -> None:
        self._stopped.set()
        self._thread.join()
        self._server.close()
        for link in self.links():
            link.close()


@contextmanager
def relay(target_host: str, target_port: int) -> Iterator[Relay]:
    running = Relay(target_host, target_port)
    try:
        yield running
    finally:
        running.close()
