"""A real HTTP server on 127.0.0.1 for the download tests: serves files the tests make, honours Range, and
misbehaves on request (cuts a response short, stalls, answers 404), recording every request it gets."""

import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

STALL_SECONDS = 5.0  # the longest a stalled response holds its connection (a test's timeout is far shorter)


@dataclass
class Served:
    """One file's bytes and how the server treats it."""

    data: bytes
    cut_after: int | None = None  # the first GET sends this many bytes, then closes the connection
    stall: bool = False  # send the headers and a few bytes, then fall silent
    headers: dict[str, str] = field(default_factory=dict)
    content_type: str = "application/octet-stream"
    delay: float = 0.0  # seconds between chunks (keeps two concurrent downloads overlapping)


class FileServer:
    """`FileServer()` starts at once on a free port; `url(name)` is a file's address; `stop()` ends it."""

    def __init__(self) -> None:
        self.files: dict[str, Served] = {}
        self.requests: list[tuple[str, str, str | None]] = []  # (method, path, Range header)
        self.stopping = threading.Event()
        self.lock = threading.Lock()
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def url(self, name: str) -> str:
        return f"{self.base}/{name}"

    def add(self, name: str, data: bytes, **how) -> str:
        self.files["/" + name] = Served(data, **how)
        return self.url(name)

    def gets(self, name: str) -> list[str | None]:
        """The Range header of every GET of `name`, in order (None: the whole file was asked for)."""
        return [r for m, p, r in self.requests if m == "GET" and p == "/" + name]

    def stop(self) -> None:
        self.stopping.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _handler(self) -> type:
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                pass

            def do_GET(self) -> None:
                rng = self.headers.get("Range")
                with server.lock:
                    server.requests.append(("GET", self.path, rng))
                    served = server.files.get(self.path)
                    first = served is not None and sum(1 for m, p, _ in server.requests if p == self.path) == 1
                if served is None:
                    self.send_error(404, "Not Found")
                    return
                data, start = served.data, 0
                found = re.fullmatch(r"bytes=(\d+)-", rng or "")
                if found and int(found.group(1)) >= len(data):
                    self.send_response(416)
                    self.send_header("Content-Range", f"bytes */{len(data)}")
                    self.end_headers()
                    return
                if found:
                    start = int(found.group(1))
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Length", str(len(data) - start))
                self.send_header("Content-Type", served.content_type)
                for key, value in served.headers.items():
                    self.send_header(key, value)
                self.end_headers()
                body = data[start:]
                if served.stall:
                    self.wfile.write(body[:16])
                    self.wfile.flush()
                    server.stopping.wait(STALL_SECONDS)
                    return
                if served.cut_after is not None and first:
                    self.wfile.write(body[: served.cut_after])
                    self.wfile.flush()
                    self.close_connection = True
                    return
                for i in range(0, len(body), 1 << 16):
                    self.wfile.write(body[i : i + (1 << 16)])
                    if served.delay:
                        server.stopping.wait(served.delay)

        return Handler
