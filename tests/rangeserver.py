"""A small HTTP server with Range support (as GDAL's /vsicurl/ needs), for tests.

Run as ``python -m tests.rangeserver FOLDER LOG``: serves FOLDER on 127.0.0.1 (a free port,
printed on the first line of stdout) and appends ``METHOD PATH RANGE`` for every request to
LOG. It runs in its own process: GDAL may hold the GIL while it waits for a response, so a
server thread in the process that reads would deadlock.
"""

from __future__ import annotations

import http.server
import re
import sys
from functools import partial
from pathlib import Path
from urllib.parse import urlsplit


class RangeHandler(http.server.SimpleHTTPRequestHandler):
    """Serves files of one folder with HEAD and single-range GET (``bytes=a-b``)."""

    log_file: Path

    def log_message(self, *args: object) -> None:  # quiet
        pass

    def do_HEAD(self) -> None:  # noqa: N802 - http.server's naming
        self._serve(body=False)

    def do_GET(self) -> None:  # noqa: N802
        self._serve(body=True)

    def _serve(self, body: bool) -> None:
        wanted = self.headers.get("Range")
        with open(self.log_file, "a") as log:
            log.write(f"{self.command} {self.path} {wanted or '-'}\n")
        path = Path(self.translate_path(urlsplit(self.path).path))
        if not path.is_file():
            self.send_error(404)
            return
        data = path.read_bytes()
        size = len(data)
        if wanted:
            match = re.fullmatch(r"bytes=(\d+)-(\d*)", wanted.strip())
            start = int(match[1])
            end = min(int(match[2]) if match[2] else size - 1, size - 1)
            if start >= size:
                self.send_error(416)
                return
            chunk = data[start:end + 1]
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        else:
            chunk = data
            self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(len(chunk)))
        self.send_header("Accept-Ranges", "bytes")
        self.end_headers()
        if body:
            self.wfile.write(chunk)


def main() -> None:
    folder, log = sys.argv[1], Path(sys.argv[2])
    handler = type("Handler", (RangeHandler,), {"log_file": log})
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                             partial(handler, directory=folder))
    print(server.server_address[1], flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
