#!/usr/bin/env python3
"""Cold start of each Lambda binary, and of the local app, from process start to first answer.

Standard library only. Run by hand (tests/load/run.sh calls it):

    python3 tests/load/coldstart.py lambda --bindir target/release [--runs 15]
    python3 tests/load/coldstart.py local --bin target/release/understudy [--runs 15]

lambda: serves a fake Lambda Runtime API on 127.0.0.1 (GET .../invocation/next hands out one event,
then holds further polls; POST .../invocation/{id}/response or /error ends the run), spawns each
binary with AWS_LAMBDA_RUNTIME_API pointing at it and an environment that keeps it off the network
(static credentials, metadata disabled, endpoints on a closed loopback port), and times spawn ->
first poll (init) and spawn -> response POST. The first event of each function needs no store call:
lifecycle GET /atlassian-connect.json (200), webhooks and edit-api unsigned requests (401),
edit-worker an empty SQS batch (no batch item failures).
Peak RSS is VmHWM from /proc/PID/status read right after the answer, before the process is killed.

local: spawns the local app on a free port with a fresh DATA_DIR each run and polls
GET /atlassian-connect.json every millisecond until it answers 200.

Every child is killed when its run ends; each run is bounded (10 s).
"""

import argparse
import http.client
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

RUN_TIMEOUT_S = 10.0
APP_BASE_URL = "https://understudy.example.com"


def apigw_v2(method, path, headers=None, body=None):
    now_ms = int(time.time() * 1000)
    headers = dict(headers or {})
    headers.setdefault("host", "understudy.example.com")
    headers.setdefault("user-agent", "coldstart")
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "understudy.example.com",
            "domainPrefix": "understudy",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
                "userAgent": "coldstart",
            },
            "requestId": "req",
            "routeKey": "$default",
            "stage": "$default",
            "time": time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime()),
            "timeEpoch": now_ms,
        },
        "body": body,
        "isBase64Encoded": False,
    }


# An empty batch: the worker answers it without an AWS call. (A record that is not a job is no
# longer answered at once: the worker moves it to the dead-letter queue, a network call that the
# SDK retries against the closed port for 40-140 ms, which is not the cold start.)
SQS_EMPTY_BATCH = {"Records": []}

FUNCTIONS = [
    ("lifecycle", "lifecycle", apigw_v2("GET", "/atlassian-connect.json")),
    (
        "webhooks",
        "webhooks",
        apigw_v2(
            "POST",
            "/webhooks/page_updated",
            {"content-type": "application/json"},
            '{"page": {"id": 1, "version": 2}}',
        ),
    ),
    ("edit-api", "edit-api", apigw_v2("GET", "/api/pages/123/audit")),
    ("edit-worker", "edit-worker", SQS_EMPTY_BATCH),
]


class Runtime:
    """The fake Runtime API's state for the current run."""

    def __init__(self):
        self.lock = threading.Lock()
        self.reset(None, None)

    def reset(self, request_id, event):
        with self.lock:
            self.request_id = request_id
            self.event = event
            self.handed_out = False
            self.first_poll = None
            self.answered = None
            self.answer_kind = None
            self.answer_body = b""
            self.done = threading.Event()
            self.stop = threading.Event()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _reply(self, code, body=b"", headers=None):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        now = time.perf_counter()
        if not self.path.endswith("/runtime/invocation/next"):
            self._reply(404)
            return
        rt = self.server.runtime
        with rt.lock:
            first = not rt.handed_out and rt.event is not None
            if rt.first_poll is None:
                rt.first_poll = now
            if first:
                rt.handed_out = True
        if not first:
            # Hold further polls until the run ends (the process is killed then).
            rt.stop.wait(RUN_TIMEOUT_S)
            self.close_connection = True
            return
        body = json.dumps(rt.event).encode()
        self._reply(
            200,
            body,
            {
                "Content-Type": "application/json",
                "Lambda-Runtime-Aws-Request-Id": rt.request_id,
                "Lambda-Runtime-Deadline-Ms": str(int(time.time() * 1000) + 30_000),
                "Lambda-Runtime-Invoked-Function-Arn": "arn:aws:lambda:us-east-1:123456789012:function:coldstart",
                "Lambda-Runtime-Trace-Id": "Root=1-00000000-000000000000000000000000;Sampled=0",
            },
        )

    def do_POST(self):
        now = time.perf_counter()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        rt = self.server.runtime
        kind = None
        if self.path.endswith("/response"):
            kind = "response"
        elif self.path.endswith("/error"):
            kind = "init-error" if "/init/" in self.path else "error"
        if kind is None:
            self._reply(404)
            return
        self._reply(202, b'{"status":"OK"}', {"Content-Type": "application/json"})
        with rt.lock:
            if rt.answered is None:
                rt.answered = now
                rt.answer_kind = kind
                rt.answer_body = body
        rt.done.set()


def peak_rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def lambda_env(port, function_name, home):
    return {
        "PATH": "/usr/bin:/bin",
        "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
        "AWS_LAMBDA_FUNCTION_NAME": function_name,
        "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
        "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{function_name}",
        "AWS_LAMBDA_LOG_STREAM_NAME": "coldstart",
        "AWS_REGION": "us-east-1",
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "AKIDCOLDSTART",
        "AWS_SECRET_ACCESS_KEY": "coldstart-secret",
        "AWS_EC2_METADATA_DISABLED": "true",
        "HOME": home,
        "TABLE_NAME": "understudy",
        "KMS_KEY_ID": "alias/understudy",
        "EDIT_QUEUE_URL": "http://127.0.0.1:9/q",
        "EDIT_DEAD_LETTER_QUEUE_URL": "http://127.0.0.1:9/dlq",
        # Every AWS call (the worker moves a record it cannot read to the dead-letter queue) goes
        # to a closed loopback port and fails at once, as the docstring says.
        "AWS_ENDPOINT_URL": "http://127.0.0.1:9",
        "APP_BASE_URL": APP_BASE_URL,
        "APP_KEY": "understudy",
        "RUST_LOG": "info",
    }


def summarize(values):
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
    }


def start_runtime_api(request_id, event):
    """A fresh fake Runtime API (own port and state) per run: a late poll from the previous,
    killed process can never take the next run's event."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    server.runtime = Runtime()
    server.runtime.reset(request_id, event)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def run_lambda(args):
    rows = []
    failed = False
    home = tempfile.mkdtemp(prefix="coldstart-home-")  # no ~/.aws here, as on Lambda
    try:
        for name, binary, event in FUNCTIONS:
            path = os.path.join(args.bindir, binary)
            if not os.path.exists(path):
                print(f"coldstart: {path} is missing (build it in release first)", file=sys.stderr)
                return 2
            init_ms, total_ms, rss = [], [], []
            answer = None
            for i in range(args.runs):
                server = start_runtime_api(f"{name}-{i}", event)
                rt = server.runtime
                env = lambda_env(server.server_address[1], name, home)
                errlog = tempfile.TemporaryFile()
                t0 = time.perf_counter()
                proc = subprocess.Popen([path], env=env, stdout=errlog, stderr=errlog)
                try:
                    if not rt.done.wait(RUN_TIMEOUT_S):
                        errlog.seek(0)
                        print(f"coldstart: {name} did not answer in {RUN_TIMEOUT_S} s; log:\n"
                              + errlog.read().decode(errors="replace")[-2000:], file=sys.stderr)
                        failed = True
                        break
                    hwm = peak_rss_kib(proc.pid)
                finally:
                    rt.stop.set()
                    proc.kill()
                    proc.wait()
                    errlog.close()
                    server.shutdown()
                    server.server_close()
                if rt.answer_kind != "response":
                    print(f"coldstart: {name} answered {rt.answer_kind}: {rt.answer_body[:300]!r}",
                          file=sys.stderr)
                    failed = True
                init_ms.append((rt.first_poll - t0) * 1000)
                total_ms.append((rt.answered - t0) * 1000)
                if hwm is not None:
                    rss.append(hwm)
                answer = rt.answer_body
            if not total_ms:
                continue
            try:
                parsed = json.loads(answer)
                status = parsed.get("statusCode") if isinstance(parsed, dict) else None
                if status is None:
                    status = "batchItemFailures=%d" % len(parsed.get("batchItemFailures", []))
            except (ValueError, AttributeError):
                status = repr(answer[:80])
            rows.append({
                "function": name,
                "binary": binary,
                "size_mib": os.path.getsize(path) / (1024 * 1024),
                "runs": len(total_ms),
                "init_ms": summarize(init_ms),
                "first_answer_ms": summarize(total_ms),
                "peak_rss_mib": max(rss) / 1024 if rss else None,
                "answer": status,
            })
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print("| function | binary size | spawn → first poll (init), median | spawn → response, median (min–max) | peak RSS | first answer |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        fa = r["first_answer_ms"]
        print(f"| {r['function']} | {r['size_mib']:.1f} MiB | {r['init_ms']['median']:.1f} ms | "
              f"{fa['median']:.1f} ms ({fa['min']:.1f}–{fa['max']:.1f}), n={r['runs']} | "
              f"{r['peak_rss_mib']:.1f} MiB | {r['answer']} |")
    print("JSON " + json.dumps(rows))
    return 1 if failed else 0


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_local(args):
    times, rss = [], []
    for _ in range(args.runs):
        port = free_port()
        data = tempfile.mkdtemp(prefix="understudy-coldstart-")
        env = {
            "PATH": "/usr/bin:/bin",
            "PORT": str(port),
            "DATA_DIR": data,
            "APP_BASE_URL": f"http://127.0.0.1:{port}",
            "RUST_LOG": "warn",
        }
        t0 = time.perf_counter()
        proc = subprocess.Popen([args.bin], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        answered = None
        try:
            while time.perf_counter() - t0 < RUN_TIMEOUT_S:
                try:
                    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
                    conn.request("GET", "/atlassian-connect.json")
                    status = conn.getresponse().status
                    conn.close()
                    if status == 200:
                        answered = time.perf_counter()
                        break
                except OSError:
                    pass
                if proc.poll() is not None:
                    break
                time.sleep(0.001)
            hwm = peak_rss_kib(proc.pid)
        finally:
            proc.kill()
            proc.wait()
            shutil.rmtree(data, ignore_errors=True)
        if answered is None:
            print("coldstart: the local app did not answer", file=sys.stderr)
            return 1
        times.append((answered - t0) * 1000)
        if hwm is not None:
            rss.append(hwm)
    s = summarize(times)
    print(f"local app ({args.bin}, {os.path.getsize(args.bin) / (1024 * 1024):.1f} MiB): spawn → first 200 on "
          f"/atlassian-connect.json, fresh DATA_DIR: median {s['median']:.1f} ms "
          f"(min {s['min']:.1f}, max {s['max']:.1f}), n={len(times)}, peak RSS {max(rss) / 1024:.1f} MiB")
    return 0


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="mode", required=True)
    lam = sub.add_parser("lambda")
    lam.add_argument("--bindir", default="target/release")
    lam.add_argument("--runs", type=int, default=15)
    loc = sub.add_parser("local")
    loc.add_argument("--bin", default="target/release/understudy")
    loc.add_argument("--runs", type=int, default=15)
    args = p.parse_args()
    if args.runs < 1:
        p.error("--runs must be at least 1")
    return run_lambda(args) if args.mode == "lambda" else run_local(args)


if __name__ == "__main__":
    sys.exit(main())
