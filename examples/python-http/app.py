"""A Gust process function in Python, with the standard library only.

It serves HTTP on $PORT and stays up between requests. GET answers a
greeting (HEAD its headers); POST echoes the JSON body back with its key count.
"""
import json
import os
import sys
from http.server import BaseHTTPRequestHandler, HTTPServer


class Handler(BaseHTTPRequestHandler):
    def _send(self, status, payload):
        body = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def do_GET(self):
        who = os.environ.get("GREETING_NAME", "world")
        self._send(200, {"message": f"hello, {who}", "path": self.path,
                         "invocation": self.headers.get("X-Gust-Invocation-Id", "")})

    do_HEAD = do_GET  # the same headers, without the body

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        try:
            data = json.loads(self.rfile.read(length) or b"{}")
        except ValueError as e:
            self._send(400, {"error": f"the body is not JSON: {e}"})
            return
        self._send(200, {"echo": data, "keys": len(data) if isinstance(data, dict) else 0})

    def log_message(self, fmt, *args):
        # One line per request on stderr: it becomes the invocation's log.
        print(f"{self.command} {self.path}", file=sys.stderr, flush=True)


if __name__ == "__main__":
    HTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler).serve_forever()
