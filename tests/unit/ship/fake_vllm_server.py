"""A stand-in for ``vllm serve`` that answers from a recorded-outputs file.

Serves GET /health and POST /v1/completions on 127.0.0.1 like vLLM 0.9.2's
OpenAI server: a record with ``logprobs_error`` answers HTTP 500 when log-probs
are asked for (as vLLM does when a log-prob is NaN). Used by test_validate_run.
"""

import argparse
import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--recording", required=True)
    parser.add_argument("--log-line", default="INFO selector.py:1] Using Torch SDPA backend.")
    parser.add_argument("--crash", action="store_true")
    args = parser.parse_args()
    print(args.log_line, flush=True)
    if args.crash:
        print("RuntimeError: CUDA error: no kernel image is available", flush=True)
        sys.exit(3)
    with open(args.recording) as stream:
        records = {r["prompt"]: r for r in json.load(stream)["responses"]}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _send(self, status, body):
            data = json.dumps(body).encode()  # allow_nan: like json.dumps, not Starlette
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self):
            self._send(200 if self.path == "/health" else 404, {})

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            record = records.get(body["prompt"])
            if record is None:
                self._send(404, {"error": "unknown prompt"})
            elif body.get("logprobs") and record.get("logprobs_error"):
                self._send(500, {"object": "error", "message": "Out of range float values are not JSON compliant"})
            else:
                self._send(200, record["response"])

    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
