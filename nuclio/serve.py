"""Serve the function over plain HTTP, without Nuclio, to try it as CVAT would call it.

python serve.py [--port 8011]          # in an unpacked bundle's nuclio/ folder
curl -X POST http://localhost:8011 -H "Content-Type: application/json" -d @test_payload.json

As Nuclio does, the env of function.yaml (e.g. CORAL_SEMANTIC_ONLY of a semantic-only
bundle) is set before the function starts; a variable set in the shell wins.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import types
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def function_env(spec_file: Path = HERE / "function.yaml") -> dict[str, str]:
    """The variables function.yaml's spec.env gives the function."""
    if not spec_file.is_file():
        return {}
    spec = yaml.safe_load(spec_file.read_text()) or {}
    return {e["name"]: str(e["value"]) for e in (spec.get("spec") or {}).get("env") or []}


# before main is imported: it reads its settings from the environment
for _name, _value in function_env().items():
    os.environ.setdefault(_name, _value)

import main  # noqa: E402


class Response:
    """The shape of nuclio's Response that main.handler builds."""

    def __init__(self, body=None, headers=None, content_type="text/plain", status_code=200):
        self.body, self.headers = body, headers or {}
        self.content_type, self.status_code = content_type, status_code


class Logger:
    def __init__(self) -> None:
        self._log = logging.getLogger("function")

    def info(self, message, *args):
        self._log.info(message, *args)

    def warn(self, message, *args):
        self._log.warning(message, *args)

    def error(self, message, *args):
        self._log.error(message, *args)


def make_context():
    """A context of the shape Nuclio gives: logger, user_data, Response."""
    return types.SimpleNamespace(
        logger=Logger(), user_data=types.SimpleNamespace(), Response=Response
    )


def serve(port: int, host: str = "127.0.0.1") -> ThreadingHTTPServer:
    context = make_context()
    main.init_context(context)

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):  # noqa: N802 (http.server's naming)
            length = int(self.headers.get("Content-Length", 0))
            event = types.SimpleNamespace(body=self.rfile.read(length))
            response = main.handler(context, event)
            body = response.body.encode() if isinstance(response.body, str) else response.body
            self.send_response(response.status_code)
            self.send_header("Content-Type", response.content_type)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    return ThreadingHTTPServer((host, port), Handler)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--port", type=int, default=8011)
    parser.add_argument("--host", default="127.0.0.1")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    server = serve(args.port, args.host)
    logging.info("Serving the function on http://%s:%d (Ctrl-C stops)", args.host, args.port)
    server.serve_forever()
