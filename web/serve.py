"""Serve the repository for the browser page, with the headers that let WebAssembly use threads.

    python web/serve.py            # then open http://localhost:8000/web/
    python web/serve.py --port 8080

Cross-origin isolation (COOP/COEP) enables SharedArrayBuffer, which ONNX Runtime Web needs for more than one WASM
thread; plain `python -m http.server` also works, single-threaded.
"""
import argparse
import functools
import http.server
import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Handler(http.server.SimpleHTTPRequestHandler):
    extensions_map = {**http.server.SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript",
                      ".js": "text/javascript", ".wasm": "application/wasm"}

    def end_headers(self):
        self.send_header("Cross-Origin-Opener-Policy", "same-origin")
        self.send_header("Cross-Origin-Embedder-Policy", "require-corp")
        self.send_header("Cache-Control", "no-cache")
        super().end_headers()

    def log_message(self, *args):   # quiet
        pass


def make_server(port=8000, host="127.0.0.1"):
    return http.server.ThreadingHTTPServer((host, port), functools.partial(Handler, directory=ROOT))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--port", type=int, default=8000, help="port to listen on")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on")
    args = p.parse_args()
    server = make_server(args.port, args.host)
    print(f"serving {ROOT} at http://{args.host}:{args.port}/web/  (Ctrl-C to stop)")
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
