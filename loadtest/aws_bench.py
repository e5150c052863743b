"""boto3 throughput: Herald's SQS API against moto in server mode and Herald's native API.

Starts its own `herald serve` (engine memory: SQLite, synchronous=FULL, SigV4 checked
against HERALD_AWS_CREDENTIALS) and its own `python -m moto.server`, each on a free
port, and stops both by PID. One client thread per system, keep-alive connections,
batches of 10 (the SQS maximum) everywhere so the systems do the same work:

  send       N messages with SendMessageBatch (native: POST …/messages/batch, 10 entries)
  single     N/4 messages with SendMessage (native: POST …/messages)
  recv+del   drain the queue: ReceiveMessage 10 + DeleteMessageBatch
             (native: POST …/receive {"max": 10} + POST …/ack)

Every body carries its index; the drain counts what came back, so a lost or duplicated
message shows in the output.

Run: python -m loadtest.aws_bench [--messages N] [--json FILE]
Needs the dev extra (boto3, moto[server]).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import httpx
from botocore.config import Config

KEY, SECRET = "AKIDBENCH", "bench-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait(url: str, proc: subprocess.Popen[bytes], path: str = "/") -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{proc.args!r} exited with {proc.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(url + path, timeout=1)
            return
        time.sleep(0.1)
    raise TimeoutError(f"{url} did not answer")


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], url: str, path: str) -> Iterator[None]:
    proc = subprocess.Popen(
        args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=os.getcwd()
    )
    try:
        _wait(url, proc, path)
        yield
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def _timed(fn: Callable[[], int]) -> dict[str, float]:
    start = time.perf_counter()
    n = fn()
    seconds = time.perf_counter() - start
    return {"messages": n, "seconds": round(seconds, 3), "per_s": round(n / seconds, 1)}


def run_boto3(url: str, n: int, queue: str) -> dict[str, Any]:
    """The three phases through boto3 against an SQS endpoint."""
    sqs = boto3.client(
        "sqs",
        endpoint_url=url,
        region_name="us-east-1",
        aws_access_key_id=KEY,
        aws_secret_access_key=SECRET,
        config=Config(retries={"max_attempts": 1}, max_pool_connections=2),
    )
    q = sqs.create_queue(QueueName=queue)["QueueUrl"]

    def send() -> int:
        for start in range(0, n, 10):
            entries = [
                {"Id": str(i), "MessageBody": json.dumps({"i": i})}
                for i in range(start, min(start + 10, n))
            ]
            assert not sqs.send_message_batch(QueueUrl=q, Entries=entries).get("Failed")
        return n

    def single() -> int:
        for i in range(n, n + n // 4):
            sqs.send_message(QueueUrl=q, MessageBody=json.dumps({"i": i}))
        return n // 4

    seen: dict[int, int] = {}

    def drain() -> int:
        while msgs := sqs.receive_message(QueueUrl=q, MaxNumberOfMessages=10).get("Messages"):
            for m in msgs:
                i = json.loads(m["Body"])["i"]
                seen[i] = seen.get(i, 0) + 1
            entries = [
                {"Id": str(k), "ReceiptHandle": m["ReceiptHandle"]} for k, m in enumerate(msgs)
            ]
            sqs.delete_message_batch(QueueUrl=q, Entries=entries)
        return len(seen)

    out = {"send": _timed(send), "single": _timed(single), "recv+del": _timed(drain)}
    out["lost"] = n + n // 4 - len(seen)
    out["duplicates"] = sum(c - 1 for c in seen.values())
    return out


def run_native(url: str, n: int, queue: str) -> dict[str, Any]:
    """The same phases through Herald's own HTTP API (httpx, keep-alive)."""
    with httpx.Client(base_url=url, timeout=30) as http:
        http.put(f"/v1/queues/{queue}", json={}).raise_for_status()

        def send() -> int:
            for start in range(0, n, 10):
                entries = [{"body": {"i": i}} for i in range(start, min(start + 10, n))]
                r = http.post(f"/v1/queues/{queue}/messages/batch", json={"entries": entries})
                r.raise_for_status()
            return n

        def single() -> int:
            for i in range(n, n + n // 4):
                http.post(
                    f"/v1/queues/{queue}/messages", json={"body": {"i": i}}
                ).raise_for_status()
            return n // 4

        seen: dict[int, int] = {}

        def drain() -> int:
            while msgs := http.post(f"/v1/queues/{queue}/receive", json={"max": 10}).json()[
                "messages"
            ]:
                for m in msgs:
                    seen[m["body"]["i"]] = seen.get(m["body"]["i"], 0) + 1
                receipts = [m["receipt"] for m in msgs]
                http.post(f"/v1/queues/{queue}/ack", json={"receipts": receipts})
            return len(seen)

        out: dict[str, Any] = {
            "send": _timed(send),
            "single": _timed(single),
            "recv+del": _timed(drain),
        }
    out["lost"] = n + n // 4 - len(seen)
    out["duplicates"] = sum(c - 1 for c in seen.values())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1000)
    parser.add_argument("--json", help="write the results here too")
    args = parser.parse_args()
    n = args.messages
    results: dict[str, Any] = {
        "messages": n,
        "python": platform.python_version(),
        "cpus": os.cpu_count(),
        "boto3": boto3.__version__,
    }
    herald_port, moto_port = _free_port(), _free_port()
    herald_url, moto_url = f"http://127.0.0.1:{herald_port}", f"http://127.0.0.1:{moto_port}"
    herald_env = {
        **os.environ,
        "HERALD_PORT": str(herald_port),
        "HERALD_DATA_DIR": tempfile.mkdtemp(prefix="herald-aws-bench-"),
        "HERALD_LOG_LEVEL": "warning",
        "HERALD_AWS_CREDENTIALS": json.dumps({KEY: {"secret": SECRET}}),
    }
    herald = [sys.executable, "-m", "gateway.cli", "serve"]
    moto = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(moto_port)]
    with _process(herald, herald_env, herald_url, "/healthz"):
        results["herald-sqs"] = run_boto3(herald_url, n, "bench-sqs")
        results["herald-native"] = run_native(herald_url, n, "bench-native")
    with _process(moto, dict(os.environ), moto_url, "/"):
        results["moto"] = run_boto3(moto_url, n, "bench-moto")
    print(f"{'system':<15}{'send (batch 10)':>18}{'single send':>14}{'recv+del':>12}  lost dup")
    for system in ("herald-sqs", "moto", "herald-native"):
        r = results[system]
        print(
            f"{system:<15}{r['send']['per_s']:>14.0f}/s{r['single']['per_s']:>12.0f}/s"
            f"{r['recv+del']['per_s']:>10.0f}/s  {r['lost']:>4} {r['duplicates']:>3}"
        )
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=2)


if __name__ == "__main__":
    main()
