"""The peer benchmark's report: Markdown tables, and the docs section it may rewrite."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from loadtest.bench.servers import WORKERS
from loadtest.procs import ROOT

DOC = ROOT / "docs" / "BENCHMARKS.md"
IMG = ROOT / "docs" / "img"
SECTION = "## Issue 5: peers"


def _f(x: Any, nd: int = 2) -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return f"{x:,.{nd}f}"
    return f"{x:,}" if isinstance(x, int) else str(x)


def targets(r: dict[str, Any]) -> list[tuple[str, str, str]]:
    by = {s["name"]: s for s in r["systems"]}
    out: list[tuple[str, str, str]] = []

    def cap_at(name: str, n: int) -> dict[str, Any] | None:
        s = by.get(name)
        if not s:
            return None
        return next((c for c in s["cap"] if c["subs"] == n), None)

    n = max(r["scale"]["cap_subs"])
    h, f = cap_at("herald-memory", n), cap_at("floor", n)
    if h and f and h["us_per_msg"] and f["us_per_msg"]:
        x = h["us_per_msg"] / f["us_per_msg"]
        out.append(
            (
                f"Herald CPU/msg at {n:,} subs ≤ 1.3× floor",
                f"{x:.2f}×",
                "met" if x <= 1.3 else "MISSED",
            )
        )
    for peer, want in (("py-socketio", 3.0), ("node-socketio", 1.0)):
        p = cap_at(peer, n)
        if h and p and h["deliveries_per_cpu_s"] and p["deliveries_per_cpu_s"]:
            x = h["deliveries_per_cpu_s"] / p["deliveries_per_cpu_s"]
            out.append(
                (
                    f"deliveries/CPU-s ≥ {want:g}× {peer} ({n:,} subs)",
                    f"{x:.1f}×",
                    "met" if x >= want else "MISSED",
                )
            )
    lat = by.get("herald-memory", {}).get("lat")
    if lat and lat.get("p99_ms") is not None and lat.get("client_cpu_pct", 0) > 85:
        out.append(
            (
                f"p99 ≤ 10 ms ({lat['subs']:,} subs / {lat['topics']} topics / "
                f"{lat['rate']:g} msg/s)",
                f"{lat['p99_ms']:.2f} ms, load generator at {lat['client_cpu_pct']} % of its core",
                "NOT MEASURABLE here (load-generator bound)",
            )
        )
        lat = None
    for x in r.get("lat_sweep", []):
        if x.get("p99_ms") is not None and x.get("client_cpu_pct", 100) <= 85:
            out.append(
                (
                    f"p99 ≤ 10 ms at {x['rate']:g} msg/s (Herald sweep)",
                    f"{x['p99_ms']:.2f} ms (delivery {x['delivery_ratio']:.4f})",
                    "met" if x["p99_ms"] <= 10 and x["delivery_ratio"] >= 0.999 else "MISSED",
                )
            )
    if lat and lat.get("p99_ms") is not None:
        out.append(
            (
                f"p99 ≤ 10 ms ({lat['subs']:,} subs / {lat['topics']} topics / "
                f"{lat['rate']:g} msg/s)",
                f"{lat['p99_ms']:.2f} ms (delivery {lat['delivery_ratio']:.4f})",
                "met" if lat["p99_ms"] <= 10 and lat["delivery_ratio"] >= 0.999 else "MISSED",
            )
        )
    idle = [i for i in r.get("idle", []) if i["name"] == "herald-memory"]
    rss = idle[0] if idle else (by.get("herald-memory", {}).get("rss") or [None])[-1]
    if rss and rss.get("kib_per_conn"):
        out.append(
            (
                f"≤ 12 KiB RSS per idle conn ({rss['conns']:,} conns)",
                f"{rss['kib_per_conn']:.2f} KiB",
                "met" if rss["kib_per_conn"] <= 12 else "MISSED",
            )
        )
    st = r.get("scale_test_workers") or r.get("scale_test")
    if st:
        out.append(
            (
                "≥ 50,000 concurrent connections",
                f"{st['conns']:,} (stopped by {st['stopped_by']}, limit {st['limit']:,})",
                "met"
                if st["conns"] >= 50_000
                else "MISSED"
                if st["limit"] >= 50_000
                else f"NOT TESTED (bound {st['limit']:,} < 50,000: fd hard limit / --quick)",
            )
        )
    return out


def markdown(r: dict[str, Any]) -> str:
    sc = r["scale"]
    L = [
        f"Command: `{r['command']}` — {r['date']} — {r['machine']}. Servers pinned to core 0 "
        f"(with their Redis), load generators and publisher to core 1; run took "
        f"{r['elapsed_s']:.0f} s; load average {' '.join(r['loadavg_start'])} at start, "
        f"{' '.join(r['loadavg_end'])} at end. Machine CPU busy (other processes) in the "
        "second before each system started: "
        + ", ".join(f"{s['name']} {s.get('busy_before_pct', '?')} %" for s in r["systems"])
        + ".",
        "",
    ]
    L += [
        "**(a) capacity** — subscribers on one topic, server process CPU (all threads) per "
        "delivered message; Redis CPU listed separately, not included.",
        "",
        "| system | subs | msgs | delivered | server CPU s | **µs/msg** | deliveries per "
        "CPU-s | × Herald µs | frame B | Redis CPU s |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    herald = {c["subs"]: c for s in r["systems"] if s["name"] == "herald-memory" for c in s["cap"]}
    for s in r["systems"]:
        for c in s["cap"]:
            h = herald.get(c["subs"])
            rel = (
                (c["us_per_msg"] / h["us_per_msg"])
                if h and c["us_per_msg"] and h["us_per_msg"]
                else None
            )
            L.append(
                f"| {s['label']} | {c['subs']:,} | {c['sent']} | {c['ratio'] * 100:.1f} % "
                f"| {c['cpu_s']:.3f} | **{_f(c['us_per_msg'])}** | "
                f"{_f(c['deliveries_per_cpu_s'] and round(c['deliveries_per_cpu_s']))} "
                f"| {_f(rel)} | {_f(c['frame_bytes'], 0)} | {_f(c['redis_cpu_s'], 3)} |"
            )
    L += [
        "",
        f"**(b) latency** — {sc['lat_subs']:,} subscribers over {sc['lat_topics']} topics, "
        f"{sc['lat_rate']:g} msg/s total for {sc['lat_seconds']:g} s (publisher over one "
        "WebSocket / NATS TCP connection); one socket in 10 parses the `t0` timestamp "
        "(CLOCK_MONOTONIC ns) carried in each message.",
        "",
        "| system | sent | achieved msg/s | delivery ratio | p50 ms | p99 ms | max ms "
        "| server CPU % (publish + drain) | load-gen CPU % |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for s in r["systems"]:
        lat = s.get("lat")
        if not lat:
            continue
        if "error" in lat:
            L.append(f"| {s['label']} | — | — | — | — | — | — | {lat['error'][:80]} | |")
            continue
        L.append(
            f"| {s['label']} | {lat['sent']:,} | {lat['achieved_rate']:g} | "
            f"{lat['delivery_ratio']:.4f} | {_f(lat.get('p50_ms'))} | {_f(lat.get('p99_ms'))} "
            f"| {_f(lat.get('max_ms'))} | {lat['server_cpu_pct']} "
            f"| {lat.get('client_cpu_pct', '—')} |"
        )
    if r.get("lat_sweep"):
        L += [
            "",
            "Herald alone at lower total rates (same subscribers and topics, fresh server "
            "each): where the load-generator core stops being the bottleneck.",
            "",
            "| msg/s total | deliveries/s | delivery ratio | p50 ms | p99 ms | max ms "
            "| server CPU % | load-gen CPU % |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for x in r["lat_sweep"]:
            if "error" in x:
                continue
            L.append(
                f"| {x['rate']:g} | {x['rate'] * x['subs'] / x['topics']:,.0f} | "
                f"{x['delivery_ratio']:.4f} | {_f(x.get('p50_ms'))} | {_f(x.get('p99_ms'))} | "
                f"{_f(x.get('max_ms'))} | {x['server_cpu_pct']} | {x.get('client_cpu_pct')} |"
            )
    L += [
        "",
        "**(c) idle memory** — VmRSS with N idle subscribed sockets minus VmRSS of the "
        "fresh server, per socket.",
        "",
        "| system | conns | RSS before KiB | RSS after KiB | **KiB/conn** |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    labels = {s["name"]: s["label"] for s in r["systems"]}
    rows = r.get("idle") or [
        {"name": s["name"], **s["rss"][0]} for s in r["systems"] if s.get("rss")
    ]
    for m in rows:
        L.append(
            f"| {labels.get(m['name'], m['name'])} | {m['conns']:,} | {m['rss0_kib']:,} | "
            f"{m['rss_kib']:,} | **{_f(m['kib_per_conn'])}** |"
        )
    if r.get("batching"):
        L += [
            "",
            "**(d) batching** — Herald, 50 msg/s per topic, same subscribers, `batch_ms` 0 vs 100.",
            "",
            "| batch_ms | subs | topics | msgs delivered | frames "
            "| frames/sub/s | wire bytes | bytes/msg | p50 ms | p99 ms |",
            "| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
        ]
        for b in r["batching"]:
            L.append(
                f"| {b['batch_ms']} | {b['subs']:,} | {b['topics']} | {b['delivered']:,} | "
                f"{b['frames']:,} | {b['frames_per_sub_s']:.1f} | {b['bytes']:,} | "
                f"{_f(b['bytes_per_msg'], 1)} | {_f(b['p50_ms'])} | {_f(b['p99_ms'])} |"
            )
    st = r.get("scale_test")
    if st:
        L += [
            "",
            f"**(e) connection scale** — Herald held **{st['conns']:,}** concurrent "
            f"subscribed connections ({st['alive']:,} alive at the end) after {st['seconds']} s, "
            f"stopped by {st['stopped_by']} (bound {st['limit']:,} connections / "
            f"{sc['scale_seconds']:g} s); RSS {st['rss0_mib']} → {st['rss_mib']} MiB. "
            f"{('Errors: ' + json.dumps(st['errors'])) if st['errors'] else ''}",
        ]
    sw = r.get("scale_test_workers")
    if sw:
        L += [
            "",
            f"**(e) connection scale, {WORKERS} workers** (`herald serve --engine redis "
            f"--workers {WORKERS}`, each worker its own fd limit) — held **{sw['conns']:,}** "
            f"concurrent subscribed connections ({sw['alive']:,} alive at the end) after "
            f"{sw['seconds']} s, stopped by {sw['stopped_by']} (bound {sw['limit']:,}); RSS of "
            f"all processes {sw['rss0_mib']} → {sw['rss_mib']} MiB. "
            f"{('Errors: ' + json.dumps(sw['errors'])) if sw['errors'] else ''}",
        ]
    L += ["", "**Targets**", "", "| target | measured | verdict |", "| --- | --- | --- |"]
    L += [f"| {a} | {b} | {c} |" for a, b, c in targets(r)]
    notes = [(s["label"], n) for s in r["systems"] for n in s["notes"]]
    if notes or r["skipped"]:
        L += [
            "",
            "Notes: "
            + "; ".join(f"{a}: {b}" for a, b in notes)
            + "; ".join(f"skipped {k} ({v})" for k, v in r["skipped"].items()),
        ]
    return "\n".join(L)


def write_docs(r: dict[str, Any], md: str, images: list[str]) -> None:
    IMG.mkdir(parents=True, exist_ok=True)
    (IMG / f"issue5-{r['mode']}.json").write_text(json.dumps(r, indent=1, default=str))
    (IMG / f"issue5-{r['mode']}.md").write_text(
        md + "\n\n" + "\n".join(f"![{Path(i).stem}](img/{Path(i).name})" for i in images) + "\n"
    )
    text = DOC.read_text() if DOC.exists() else "# Benchmarks\n"
    intro_file = ROOT / "loadtest" / "peers" / "BENCH_INTRO.md"
    intro = intro_file.read_text().strip() + "\n\n" if intro_file.exists() else ""
    parts = []
    for mode in ("full", "quick"):
        f = IMG / f"issue5-{mode}.md"
        if f.exists():
            parts.append(f"### {'Full' if mode == 'full' else 'Quick'} run\n\n" + f.read_text())
    notes_file = ROOT / "loadtest" / "peers" / "BENCH_NOTES.md"
    notes = "\n" + notes_file.read_text().strip() + "\n" if notes_file.exists() else ""
    section = f"{SECTION}\n\n{intro}" + "\n".join(parts) + notes
    pat = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## (?!Issue 5)|\Z)", re.S | re.M)
    if pat.search(text):
        text = pat.sub(lambda _: section.rstrip() + "\n\n", text, count=1)
    else:
        text = text.rstrip() + "\n\n" + section.rstrip() + "\n"
    DOC.write_text(text)
