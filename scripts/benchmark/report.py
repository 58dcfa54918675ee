"""The benchmark's markdown tables (stdout and ``--markdown``), from the JSON results."""

from __future__ import annotations

import json
from typing import Any

from .session import ms

__all__ = ["markdown"]


def _f(value: Any, fmt: str = "{:.2f}") -> str:
    if value is None:
        return "–"
    return fmt.format(value)


def markdown(results: dict[str, Any]) -> str:
    out: list[str] = []
    add = out.append
    if "fanout" in results:
        fan = results["fanout"]
        add("### Fan-out: sequential vs ParallelStreamManager vs ideal (medians)\n")
        add(f"Per-section profile: `{json.dumps(fan['profile'])}`, each section its own seed.\n")
        add(
            "| N | ideal ms | parallel ms | sequential ms "
            "| parallel ÷ ideal | sequential ÷ parallel |"
        )
        add("|---|---|---|---|---|---|")
        for row in fan["rows"]:
            add(
                f"| {row['n']} | {_f(ms(row['ideal_s']), '{:.0f}')} "
                f"| {_f(ms(row['parallel_s']), '{:.0f}')} "
                f"| {_f(ms(row['sequential_s']), '{:.0f}')} "
                f"| {_f(row['parallel_over_ideal'], '{:.3f}')} "
                f"| {_f(row['sequential_over_parallel'], '{:.2f}')} |"
            )
        un = fan["uneven"]
        add("")
        add(
            f"Uneven: one slow section first (`{json.dumps(un['slow'])}`), "
            f"{un['fast_sections']} fast ones (`{json.dumps(un['fast'])}`).\n"
        )
        add(
            "| mode | parallel ÷ ideal | sequential ÷ parallel | first chunk ms "
            "| fast sections: first chunk ms | fast sections: all delivered ms |"
        )
        add("|---|---|---|---|---|---|")
        for mode in ("interleaved", "ordered"):
            row = un[mode]
            add(
                f"| {mode} | {_f(row['parallel_over_ideal'], '{:.3f}')} "
                f"| {_f(row['sequential_over_parallel'])} "
                f"| {_f(ms(row['first_chunk_s']), '{:.0f}')} "
                f"| {_f(ms(row['fast_first_chunk_s']), '{:.0f}')} "
                f"| {_f(ms(row['fast_all_delivered_s']), '{:.0f}')} |"
            )
        add("")
    if "ttfb" in results:
        tt = results["ttfb"]
        add("### First event and first content chunk, engine alone\n")
        add(
            f"{tt['runs']} runs of {tt['sections']} sections, upstream "
            f"`{json.dumps(tt['profile'])}` (TTFT fixed, no jitter).\n"
        )
        add("| measure | p50 ms | p95 ms | max ms |")
        add("|---|---|---|---|")
        labels = {
            "first_event": "first event (`start`) after `stream()`",
            "first_chunk": "first content chunk after `stream()`",
            "first_chunk_overhead": "first chunk − upstream TTFT",
            "first_chunk_overhead_ours": "same, less the simulator's own lateness",
            "request_to_simulator": "`stream()` → request reaches the simulator",
            "simulator_to_consumer": "simulator sends token → consumer has it",
        }
        for key, label in labels.items():
            s = tt[key]
            add(f"| {label} | {_f(s['p50_ms'])} | {_f(s['p95_ms'])} | {_f(s['max_ms'])} |")
        add("")
    if "service" in results:
        sv = results["service"]
        add("### Through the service (`backend-ai serve`, gunicorn), one client at a time\n")
        add(
            f"{sv['requests']} requests to `/dream/interpret-stream`, upstream "
            f"`{json.dumps(sv['profile'])}`.\n"
        )
        add("| measure, seen by the HTTP client | p50 ms | p95 ms | p99 ms |")
        add("|---|---|---|---|")
        for key, label in (
            ("first_byte", "first response byte"),
            ("first_event", "first SSE event (`start`)"),
            ("first_chunk_overhead", "first content chunk − upstream TTFT"),
            ("first_chunk_overhead_ours", "same, less the simulator's own lateness"),
            ("request_to_simulator", "request sent → it reaches the simulator"),
        ):
            if key not in sv:  # results from before these keys existed
                continue
            d = sv[key]
            add(f"| {label} | {_f(d['p50_ms'])} | {_f(d['p95_ms'])} | {_f(d['p99_ms'])} |")
        add("")
    if "merge_cost" in results:
        mc = results["merge_cost"]
        add("### CPU per chunk, chunks arriving in bursts (medians, this process only)\n")
        add(
            f"{mc['rows']['sdk_raw']['chunks']} chunks per section from the burst upstream; the "
            f"recording call every row pays costs {mc['trace_call_us']} µs per chunk.\n"
        )
        add("| contender | sections | chunks | CPU µs/chunk | beyond SDK raw lines µs |")
        add("|---|---|---|---|---|")
        for name, row in mc["rows"].items():
            add(
                f"| {name} | {row['sections']} | {row['chunks']} "
                f"| {_f(row['cpu_us_per_chunk'], '{:.1f}')} "
                f"| {_f(row.get('beyond_raw_us'), '{:+.1f}')} |"
            )
        add("")
        add("Via the simulator at `itl_ms=0` (paced by how fast it writes; includes wake-ups):\n")
        add("| contender | sections | CPU µs/chunk | wall µs/chunk |")
        add("|---|---|---|---|")
        for name, row in mc["via_simulator"].items():
            add(
                f"| {name} | {row['sections']} | {_f(row['cpu_us_per_chunk'], '{:.1f}')} "
                f"| {_f(row['wall_us_per_chunk'], '{:.1f}')} |"
            )
        add("")
    if "http" in results:
        ht = results["http"]
        add("### HTTP/2 vs HTTP/1.1 pool, 9 parallel sections (medians)\n")
        add(
            "| pool | TCP connections | max streams on one connection | cold wall ms "
            "| warm wall ms | cancel: all 9 upstream closed, p50 ms | max ms | close() ms |"
        )
        add("|---|---|---|---|---|---|---|---|")
        for label in ("http2", "http1"):
            row = ht[label]
            c = row["cancel"]
            add(
                f"| {label} | {_f(row['tcp_connections'], '{:.0f}')} "
                f"| {_f(row['max_streams_per_connection'], '{:.0f}')} "
                f"| {_f(ms(row['cold_wall_s']), '{:.0f}')} "
                f"| {_f(ms(row['warm_wall_s']), '{:.0f}')} "
                f"| {_f(c['disconnect_all_ms_p50'])} | {_f(c['disconnect_all_ms_max'])} "
                f"| {_f(c['close_call_ms_p50'])} |"
            )
        add("")
    if "peers" in results:
        pe = results["peers"]
        mc_rows = results.get("merge_cost", {}).get("rows", {})
        add("### Peers on the same simulator (medians)\n")
        add(
            "| peer | ÷ ideal N=3 | ÷ ideal N=9 | first chunk ms N=3 | CPU µs/chunk, burst, N=3 "
            "| CPU µs/chunk paced, N=9 | one section fails |"
        )
        add("|---|---|---|---|---|---|---|")
        merge_key = {
            "sequential": "sequential_n3",
            "engine": "engine_n3",
            "asyncio": "asyncio_n3",
            "langchain": "langchain_n3",
        }
        for name, label in pe["labels"].items():
            n3 = pe["rows"]["n3"][name]
            n9 = pe["rows"]["n9"][name]
            fail = pe["one_section_fails"][name]
            if fail["aborted"]:
                behaviour = f"whole stream aborted ({fail['aborted'].split(':')[0]})"
            else:
                behaviour = f"{fail['sections_completed']}/{fail['sections']} sections delivered"
            cpu0 = mc_rows.get(merge_key.get(name, ""), {}).get("cpu_us_per_chunk")
            add(
                f"| {label} | {_f(n3['over_ideal'], '{:.3f}')} | {_f(n9['over_ideal'], '{:.3f}')} "
                f"| {_f(ms(n3['first_chunk_s']), '{:.0f}')} | {_f(cpu0, '{:.1f}')} "
                f"| {_f(n9['cpu_us_per_chunk_paced'], '{:.0f}')} | {behaviour} |"
            )
        add("")
    return "\n".join(out)
