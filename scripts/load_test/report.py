"""The load test's figures: one level's summary (the JSON written), its text, the sweep table.

Latencies are nearest-rank percentiles (``tests/support/stats.py``) in milliseconds; the first
content chunk less the upstream's fixed time to first token is the service's own overhead.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from tests.support.stats import percentile

from .client import Totals

__all__ = ["capacity", "format_summary", "format_sweep", "summarize"]


def summarize(
    totals: Totals,
    wall: float,
    cpu: float,
    *,
    upstream_ttft_ms: float | None,
    concurrent: int,
) -> dict[str, Any]:
    results = totals.results

    def dist(values: list[float]) -> dict[str, float | None]:
        return {
            f"p{int(q * 100)}_ms": None
            if (v := percentile(values, q)) is None
            else round(v * 1e3, 2)
            for q in (0.5, 0.95, 0.99)
        } | {"max_ms": round(max(values) * 1e3, 2) if values else None}

    first_chunk = [r.first_chunk_s for r in results if r.first_chunk_s is not None]
    summary: dict[str, Any] = {
        "concurrent": concurrent,
        "requests": len(results),
        "ok": sum(1 for r in results if r.ok),
        "wall_s": round(wall, 3),
        "requests_per_s": round(len(results) / wall, 2) if wall else None,
        "chunks": sum(r.chunks for r in results),
        "chunks_per_s": round(sum(r.chunks for r in results) / wall, 1) if wall else None,
        "first_byte": dist([r.first_byte_s for r in results if r.first_byte_s is not None]),
        "first_event": dist([r.first_event_s for r in results if r.first_event_s is not None]),
        "first_chunk": dist(first_chunk),
        "total": dist([r.total_s for r in results if r.total_s is not None and r.done]),
        "lost_chunks": sum(r.lost for r in results),
        "duplicate_chunks": sum(r.duplicates for r in results),
        "missing_done": sum(1 for r in results if not r.done),
        "events_after_done": sum(r.events_after_done for r in results),
        "protocol_violations": sum(r.violations for r in results),
        "errors": dict(Counter(r.error for r in results if r.error)),
        "section_errors": dict(sum((r.section_errors for r in results), Counter())),
        "client_cpu_percent": round(100 * cpu / wall, 1) if wall else None,
    }
    if upstream_ttft_ms is not None:
        ttft = upstream_ttft_ms / 1000
        summary["upstream_ttft_ms"] = upstream_ttft_ms
        summary["first_chunk_overhead"] = dist([v - ttft for v in first_chunk])
    return summary


def _round(value: Any) -> Any:
    return round(value, 1) if isinstance(value, float) else value


def format_summary(s: dict[str, Any]) -> str:
    def row(name: str, d: dict[str, Any]) -> str:
        return (
            f"  {name:<22} p50 {d['p50_ms']!s:>9}  p95 {d['p95_ms']!s:>9}  "
            f"p99 {d['p99_ms']!s:>9}  max {d['max_ms']!s:>9} ms"
        )

    lines = [
        f"requests {s['requests']} ({s['ok']} ok) at --concurrent {s['concurrent']} "
        f"in {s['wall_s']} s: {s['requests_per_s']} req/s, {s['chunks_per_s']} chunks/s",
        row("first byte", s["first_byte"]),
        row("first event", s["first_event"]),
        row("first content chunk", s["first_chunk"]),
    ]
    if "first_chunk_overhead" in s:
        lines.append(row(f"  - TTFT {s['upstream_ttft_ms']:g} ms", s["first_chunk_overhead"]))
    lines += [
        row("total", s["total"]),
        f"  lost chunks {s['lost_chunks']}, duplicates {s['duplicate_chunks']}, "
        f"missing done {s['missing_done']}, events after done {s['events_after_done']}, "
        f"protocol violations {s['protocol_violations']}",
        f"  errors {s['errors'] or 'none'}; section errors {s['section_errors'] or 'none'}",
        f"  client CPU {s['client_cpu_percent']}% of one core",
    ]
    late = (s.get("upstream") or {}).get("chunk_lateness") or {}
    if late:
        lines.append(
            f"  simulator lateness against its schedule: p50 {_round(late.get('p50_ms'))} ms, "
            f"p99 {_round(late.get('p99_ms'))} ms (a starved upstream inflates the overhead above)"
        )
    per_chunk = s.get("cpu_us_per_chunk") or {}
    if per_chunk:
        lines.append(
            "  CPU per chunk, µs: " + ", ".join(f"{k} {v:g}" for k, v in per_chunk.items())
        )
    usage = s.get("cpu_percent_of_one_core") or {}
    if usage:
        lines.append(
            "  CPU, % of one core: "
            + ", ".join(f"{k} {v:g}" for k, v in usage.items() if k != "machine_capacity")
            + (
                f" (machine has {usage['machine_capacity']:g})"
                if "machine_capacity" in usage
                else ""
            )
        )
    return "\n".join(lines)


def capacity(summaries: list[dict[str, Any]], limit_ms: float) -> int | None:
    """The highest level whose p99 first-chunk overhead stayed under ``limit_ms``, lossless."""
    best = None
    for s in summaries:
        p99 = (s.get("first_chunk_overhead") or {}).get("p99_ms")
        clean = not (s["lost_chunks"] or s["duplicate_chunks"] or s["missing_done"])
        if p99 is not None and p99 < limit_ms and clean:
            best = max(best or 0, s["concurrent"])
    return best


def format_sweep(summaries: list[dict[str, Any]], limit_ms: float) -> str:
    lines = [
        "",
        "| concurrent | req/s | chunks/s | first byte p99 ms "
        "| first chunk − TTFT p50 / p95 / p99 ms | lost / dup / no done "
        "| CPU % of a core: server / simulator / client / others | server CPU µs/chunk "
        "| simulator lateness p50 / p99 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        o = s.get("first_chunk_overhead") or {}
        u = s.get("cpu_percent_of_one_core") or {}
        # How late the simulator itself sent tokens against its schedule (CPU starved).
        late = (s.get("upstream") or {}).get("chunk_lateness") or {}
        lines.append(
            f"| {s['concurrent']} | {s['requests_per_s']} | {s['chunks_per_s']} "
            f"| {s['first_byte']['p99_ms']} | {o.get('p50_ms')} / {o.get('p95_ms')} / "
            f"{o.get('p99_ms')} | {s['lost_chunks']} / {s['duplicate_chunks']} / "
            f"{s['missing_done']} | {u.get('server')} / {u.get('simulator')} / "
            f"{u.get('client')} / {u.get('others')} "
            f"| {(s.get('cpu_us_per_chunk') or {}).get('server')} "
            f"| {_round(late.get('p50_ms'))} / {_round(late.get('p99_ms'))} |"
        )
    lines.append(
        f"\ncapacity (p99 first-chunk overhead < {limit_ms:g} ms, no loss): "
        f"{capacity(summaries, limit_ms)}"
    )
    return "\n".join(lines)
