#!/usr/bin/env python3
"""A loopback stand-in of the agent vendors' APIs, for tests that run the real agent CLIs.

One process serves every API shape the built-in agents speak (one module each):
  anthropic.py          Anthropic Messages         POST /v1/messages            (claude)
  openai_responses.py   OpenAI Responses           POST /v1/responses, WS GET   (codex)
  gemini.py             Gemini generateContent     POST /v1beta/models/M:generateContent,
                                                   :streamGenerateContent?alt=sse (gemini)
  chat_completions.py   OpenAI-compatible chat     POST /chat/completions, /v1/chat/completions
                                                   (aider via DeepSeek, grok)

Every conversation goes the same way in mode `ok`: the first model turn asks for one tool call
that writes the file --file with --content into the agent's working directory; once the request
carries that tool's result, the model answers with a final message (--answer) and usage figures
(--input-tokens/--output-tokens). Modes:
  ok       as above
  401      every model request is refused as the vendor refuses a bad key (its error shape)
  silent   requests are read and never answered (the connection stays open)
The mode is --mode unless the request's key (any header or the query string) contains `-401-`
or `-silent-`: then that mode, so that one stand-in serves tenants with good and bad keys.

Every request is appended to --record as one JSON line: method, path, headers, body. The
chosen address is printed on stdout as `listening http://127.0.0.1:PORT`, then the server runs
until it is killed. Only the standard library is used.

With --tls-cert FILE --tls-key FILE (PEM) it serves HTTPS instead, as the vendors do, and prints
`listening https://ADDR:PORT`; each accepted connection's TLS handshake happens in its own
thread, so a client that never finishes one holds up nobody else. --bind ADDR (default
127.0.0.1) is the address it listens on.
"""

import argparse
import copy
import http.server
import json
import socket
import socketserver
import ssl
import sys
import threading
import time

import anthropic
import chat_completions
import gemini
import openai_responses

VENDORS = [anthropic, openai_responses, gemini, chat_completions]


class Settings:
    """What a conversation writes and answers; shared by every vendor module."""

    def __init__(self, args):
        self.mode = args.mode
        self.file = args.file
        self.content = args.content
        self.answer = args.answer
        self.input_tokens = args.input_tokens
        self.output_tokens = args.output_tokens
        self.record = args.record
        self.lock = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    settings = None  # set in main

    def log_message(self, fmt, *args):  # quiet: the record file is the log
        pass

    # -- helpers for vendor modules -------------------------------------------------------
    def body_bytes(self):
        if hasattr(self, "_body"):
            return self._body
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            data = self.rfile.read(n)
        elif self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            data = b""
            while True:
                line = self.rfile.readline().strip()
                size = int(line.split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    break
                data += self.rfile.read(size)
                self.rfile.readline()
        else:
            data = b""
        enc = self.headers.get("Content-Encoding", "").lower()
        if enc == "gzip":
            import gzip
            data = gzip.decompress(data)
        elif enc == "zstd":
            raise ValueError("zstd request bodies are not supported by the stand-in")
        self._body = data
        return data

    def body_json(self):
        raw = self.body_bytes()
        try:
            return json.loads(raw) if raw else {}
        except ValueError:
            return {}

    def send_json(self, status, obj, headers=None):
        data = json.dumps(obj).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def send_sse(self, events, status=200):
        """events: list of (event_name or None, data_obj_or_str)."""
        chunks = []
        for name, data in events:
            text = data if isinstance(data, str) else json.dumps(data)
            part = (f"event: {name}\n" if name else "") + f"data: {text}\n\n"
            chunks.append(part.encode())
        body = b"".join(chunks)
        self.send_response(status)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    # -- dispatch ---------------------------------------------------------------------------
    def _record(self):
        s = self.settings
        try:
            body = self.body_bytes().decode("utf-8", "replace")
        except Exception as e:  # a body we cannot read is recorded as such
            body = f"<unreadable: {e}>"
        line = json.dumps(
            {
                "method": self.command,
                "path": self.path,
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": body,
            }
        )
        if s.record:
            with s.lock, open(s.record, "a") as f:
                f.write(line + "\n")

    def _mode(self):
        """The mode of this request: from its key when the key names one, else --mode."""
        seen = " ".join(self.headers.values()) + " " + self.path
        for mode in ("401", "silent"):
            if f"-{mode}-" in seen:
                return mode
        return self.settings.mode

    def _dispatch(self):
        # The handler lives as long as its keep-alive connection: forget the previous body.
        self.__dict__.pop("_body", None)
        self._record()
        settings = copy.copy(self.settings)
        settings.mode = self._mode()
        for vendor in VENDORS:
            if vendor.matches(self):
                if settings.mode == "silent" and vendor.is_model_request(self):
                    # Hold the connection open and never answer.
                    while True:
                        time.sleep(3600)
                vendor.handle(self, settings)
                return
        self.send_json(404, {"error": {"message": f"stand-in: no route for {self.command} {self.path}"}})

    do_GET = _dispatch
    do_POST = _dispatch
    do_PUT = _dispatch
    do_DELETE = _dispatch


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    tls = None  # an ssl.SSLContext (server side) in HTTPS mode

    def get_request(self):
        sock, addr = super().get_request()
        if self.tls is not None:
            # The handshake runs in the connection's thread (finish_request), not in accept.
            sock = self.tls.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def finish_request(self, request, client_address):
        if self.tls is not None:
            try:
                request.do_handshake()
            except (ssl.SSLError, OSError):
                # A client that refused our certificate, or went away: nothing to answer.
                return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address):
        # A connection the client dropped (or a TLS alert) is the client's business.
        if isinstance(sys.exc_info()[1], (ssl.SSLError, ConnectionError)):
            return
        super().handle_error(request, client_address)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--port", type=int, default=0)
    p.add_argument("--bind", default="127.0.0.1", help="the address to listen on")
    p.add_argument("--tls-cert", default=None, help="serve HTTPS with this certificate (PEM chain)")
    p.add_argument("--tls-key", default=None, help="the certificate's private key (PEM)")
    p.add_argument("--mode", choices=["ok", "401", "silent"], default="ok")
    p.add_argument("--record", default=None)
    p.add_argument("--file", default="standin-made.txt")
    p.add_argument("--content", default="written by the stand-in's tool call\n")
    p.add_argument("--answer", default="Done: I wrote the file.")
    p.add_argument("--input-tokens", type=int, default=1234)
    p.add_argument("--output-tokens", type=int, default=56)
    args = p.parse_args()
    if (args.tls_cert is None) != (args.tls_key is None):
        p.error("--tls-cert and --tls-key go together")
    Handler.settings = Settings(args)
    if ":" in args.bind:
        Server.address_family = socket.AF_INET6
    srv = Server((args.bind, args.port), Handler)
    scheme = "http"
    if args.tls_cert is not None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        ctx.load_cert_chain(args.tls_cert, args.tls_key)
        ctx.set_alpn_protocols(["http/1.1"])
        srv.tls = ctx
        scheme = "https"
    host = f"[{args.bind}]" if ":" in args.bind else args.bind
    print(f"listening {scheme}://{host}:{srv.server_address[1]}", flush=True)
    try:
        srv.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
