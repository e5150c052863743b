"""PNG plots for issue 5's peer benchmark (`loadtest/bench.py`), small on purpose."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def _short(label: str) -> str:
    return (
        label.replace(" (pre-framed transport.write)", "")
        .replace(" + AsyncRedisManager", "")
        .replace(" + redis-adapter", "")
        .replace(" ConnectionManager", " CM")
        .replace(" (websocket)", "")
        .replace(" server", "")
        .replace(" + FastAPI", "")
    )


def plot_all(r: dict[str, Any], outdir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    outdir.mkdir(parents=True, exist_ok=True)
    mode = r["mode"]
    files: list[str] = []

    def save(fig: Any, name: str) -> None:
        path = outdir / f"issue5-{mode}-{name}.png"
        fig.tight_layout()
        fig.savefig(path, dpi=72)
        plt.close(fig)
        files.append(str(path))

    def colors(names: list[str]) -> list[str]:
        return [
            "#d62728" if n.startswith("Herald") else "#7f7f7f" if "floor" in n else "#1f77b4"
            for n in names
        ]

    # (a) CPU µs per delivered message, one bar group per subscriber count
    sizes = sorted({c["subs"] for s in r["systems"] for c in s["cap"]})
    if sizes:
        fig, axes = plt.subplots(1, len(sizes), figsize=(5.2 * len(sizes), 3.2), squeeze=False)
        for ax, n in zip(axes[0], sizes, strict=True):
            rows = [
                (_short(s["label"]), c["us_per_msg"])
                for s in r["systems"]
                for c in s["cap"]
                if c["subs"] == n and c["us_per_msg"]
            ]
            names = [a for a, _ in rows]
            ax.barh(names, [b for _, b in rows], color=colors(names))
            ax.invert_yaxis()
            ax.set_title(f"(a) server CPU µs per delivered msg, {n:,} subs", fontsize=8)
            ax.tick_params(labelsize=8)
        save(fig, "cpu")

    # (b) latency p50 / p99 (log)
    rows = [
        (_short(s["label"]), s["lat"])
        for s in r["systems"]
        if s.get("lat") and s["lat"].get("p99_ms") is not None
    ]
    if rows:
        fig, ax = plt.subplots(figsize=(6, 3.2))
        y = range(len(rows))
        ax.barh(
            [i + 0.2 for i in y], [x["p99_ms"] for _, x in rows], 0.4, label="p99", color="#ff7f0e"
        )
        ax.barh(
            [i - 0.2 for i in y], [x["p50_ms"] for _, x in rows], 0.4, label="p50", color="#2ca02c"
        )
        ax.set_yticks(list(y), [a for a, _ in rows], fontsize=8)
        ax.invert_yaxis()
        ax.set_xscale("log")
        ax.axvline(10, color="red", lw=0.8, ls="--")
        sc = r["scale"]
        ax.set_title(
            f"(b) publish→receive ms, {sc['lat_subs']:,} subs / {sc['lat_topics']} topics "
            f"/ {sc['lat_rate']:g} msg/s",
            fontsize=9,
        )
        ax.legend(fontsize=7)
        save(fig, "latency")

    # (c) KiB per idle connection
    labels = {s["name"]: _short(s["label"]) for s in r["systems"]}
    idle = r.get("idle") or [
        {"name": s["name"], **s["rss"][0]} for s in r["systems"] if s.get("rss")
    ]
    idle = [m for m in idle if m.get("kib_per_conn")]
    if idle:
        fig, ax = plt.subplots(figsize=(6, 3.0))
        names = [labels.get(m["name"], m["name"]) for m in idle]
        ax.barh(names, [m["kib_per_conn"] for m in idle], color=colors(names))
        ax.invert_yaxis()
        ax.axvline(12, color="red", lw=0.8, ls="--")
        ax.set_title(
            f"(c) RSS KiB per idle subscribed connection ({idle[0]['conns']:,})", fontsize=9
        )
        ax.tick_params(labelsize=8)
        save(fig, "memory")
    return files
