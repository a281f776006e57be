"""Write dashboards/rcupending.json, the Grafana dashboard of `rcupending serve`'s metrics.

Queries name the exported sample names exactly (rcupending_tools/views/metrics.py);
tests/unit/test_surfaces_prometheus.py checks that every query names an exported metric and
every exported family is on the dashboard. Run: .venv/bin/python dashboards/make_dashboard.py
"""

from __future__ import annotations

import json
from pathlib import Path

DS = {"type": "prometheus", "uid": "${datasource}"}
SEL = '{instance=~"$instance"}'
RATE = "[$__rate_interval]"

_next_id = 0


def panel(title, kind, targets, x, y, w, h, unit="short", description="", **extra):  # noqa: ANN001, ANN201
    global _next_id
    _next_id += 1
    p = {
        "id": _next_id,
        "type": kind,
        "title": title,
        "description": description,
        "datasource": DS,
        "gridPos": {"x": x, "y": y, "w": w, "h": h},
        "fieldConfig": {"defaults": {"unit": unit}, "overrides": []},
        "targets": [
            {"refId": chr(ord("A") + i), "datasource": DS, "expr": expr, "legendFormat": legend}
            for i, (expr, legend) in enumerate(targets)
        ],
    }
    p.update(extra)
    return p


def row(title, y):  # noqa: ANN001, ANN201
    global _next_id
    _next_id += 1
    return {
        "id": _next_id,
        "type": "row",
        "title": title,
        "collapsed": False,
        "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
        "panels": [],
    }


def dashboard() -> dict:
    p = []
    p.append(row("Source", 0))
    p.append(
        panel(
            "Data source and kernel",
            "table",
            [(f"rcupending_source_info{SEL}", "{{instance}}")],
            0,
            1,
            16,
            5,
            description="live (this host), lab-vm (a real kernel in a lab VM) or replay; kernel, "
            "tool version, host, lab spec",
            options={"showHeader": True},
            transformations=[{"id": "labelsToFields", "options": {"mode": "columns"}}],
        )
    )
    p.append(
        panel(
            "Seconds since attach",
            "stat",
            [(f"rcupending_elapsed_seconds{SEL}", "{{instance}}")],
            16,
            1,
            4,
            5,
            unit="s",
        )
    )
    p.append(
        panel(
            "Snapshot age / number",
            "stat",
            [
                (f"time() - rcupending_snapshot_time_seconds{SEL}", "age {{instance}}"),
                (f"rcupending_snapshot_seq{SEL}", "seq {{instance}}"),
            ],
            20,
            1,
            4,
            5,
        )
    )
    p.append(
        panel(
            "Probes",
            "table",
            [(f"rcupending_probe_info{SEL}", "{{probe}}")],
            0,
            6,
            24,
            5,
            description="attached (mechanism), stand-in (a tracepoint seeing part), "
            "blocked, absent",
            transformations=[{"id": "labelsToFields", "options": {"mode": "columns"}}],
        )
    )
    y = 11
    p.append(row("kvfree_rcu: memory waiting behind RCU", y))
    p.append(
        panel(
            "Pending bytes (enqueued, not yet freed)",
            "timeseries",
            [
                (f"rcupending_kvfree_rcu_pending_bytes{SEL}", "all {{instance}}"),
                (f"rcupending_kvfree_rcu_pending_bytes_by_cpu{SEL}", "CPU {{cpu}} {{instance}}"),
            ],
            0,
            y + 1,
            12,
            8,
            unit="bytes",
            description="tracked kvfree_rcu objects enqueued since attach whose free has not "
            "happened yet, by the CPU that enqueued them",
        )
    )
    p.append(
        panel(
            "Pending objects",
            "timeseries",
            [
                (f"rcupending_kvfree_rcu_pending_objects{SEL}", "all {{instance}}"),
                (f"rcupending_kvfree_rcu_pending_objects_by_cpu{SEL}", "CPU {{cpu}} {{instance}}"),
            ],
            12,
            y + 1,
            12,
            8,
        )
    )
    y += 9
    p.append(
        panel(
            "Enqueue and free rates (objects / s)",
            "timeseries",
            [
                (
                    f"rate(rcupending_kvfree_rcu_enqueued_objects_total{SEL}{RATE})",
                    "enqueued {{instance}}",
                ),
                (
                    f"rate(rcupending_kvfree_rcu_freed_objects_total{SEL}{RATE})",
                    "freed {{instance}}",
                ),
                (
                    f"rate(rcupending_kvfree_rcu_enqueued_objects_by_kind_total{SEL}{RATE})",
                    "enqueued {{kind}} {{instance}}",
                ),
                (
                    f"rate(rcupending_kvfree_rcu_stress_enqueued_objects_total{SEL}{RATE})",
                    "stress workers {{instance}}",
                ),
            ],
            0,
            y,
            12,
            8,
            unit="ops",
        )
    )
    p.append(
        panel(
            "Enqueue and free rates (bytes / s)",
            "timeseries",
            [
                (
                    f"rate(rcupending_kvfree_rcu_enqueued_bytes_total{SEL}{RATE})",
                    "enqueued {{instance}}",
                ),
                (f"rate(rcupending_kvfree_rcu_freed_bytes_total{SEL}{RATE})", "freed {{instance}}"),
                (
                    f"rate(rcupending_kvfree_rcu_enqueued_bytes_by_cpu_total{SEL}{RATE})",
                    "enqueued CPU {{cpu}} {{instance}}",
                ),
            ],
            12,
            y,
            12,
            8,
            unit="Bps",
        )
    )
    y += 8
    p.append(
        panel(
            "kvfree_rcu enqueues / s per CPU",
            "timeseries",
            [
                (
                    f"rate(rcupending_kvfree_rcu_enqueued_objects_by_cpu_total{SEL}{RATE})",
                    "CPU {{cpu}} {{instance}}",
                )
            ],
            0,
            y,
            8,
            7,
            unit="ops",
        )
    )
    p.append(
        panel(
            "Enqueue route (krc batching / slab sheaf)",
            "timeseries",
            [
                (
                    f"rate(rcupending_kvfree_rcu_enqueued_objects_by_route_total{SEL}{RATE})",
                    "{{route}} objects {{instance}}",
                ),
                (
                    f"rate(rcupending_kvfree_rcu_enqueued_bytes_by_route_total{SEL}{RATE})",
                    "{{route}} bytes {{instance}}",
                ),
            ],
            8,
            y,
            8,
            7,
        )
    )
    p.append(
        panel(
            "Enqueued (cumulative since attach)",
            "stat",
            [(f"rcupending_kvfree_rcu_enqueued_objects_total{SEL}", "objects {{instance}}")],
            16,
            y,
            8,
            7,
        )
    )
    y += 7
    p.append(
        panel(
            "Frees by path / s",
            "timeseries",
            [
                (
                    f"rate(rcupending_kvfree_rcu_freed_objects_by_path_total{SEL}{RATE})",
                    "{{path}} {{instance}}",
                ),
                (
                    f"rate(rcupending_kvfree_rcu_freed_bytes_by_path_total{SEL}{RATE})",
                    "{{path}} bytes {{instance}}",
                ),
            ],
            0,
            y,
            12,
            7,
            unit="ops",
        )
    )
    p.append(
        panel(
            "Fallback share of frees (list, inline)",
            "timeseries",
            [
                (
                    f'rate(rcupending_kvfree_rcu_freed_objects_by_path_total{{path=~"list|inline",'
                    f'instance=~"$instance"}}{RATE}) / ignoring(path) group_left '
                    f"rate(rcupending_kvfree_rcu_freed_objects_total{SEL}{RATE})",
                    "{{path}} {{instance}}",
                )
            ],
            12,
            y,
            12,
            7,
            unit="percentunit",
            description="list: krc channel 3 (no page for the bulk array); inline: headless "
            "synchronize_rcu() + kvfree",
        )
    )
    y += 7
    p.append(
        panel(
            "Wait behind RCU: enqueue -> free (p50, p90, p99)",
            "timeseries",
            [
                (
                    f"histogram_quantile({q}, sum by (le, instance) "
                    f"(rate(rcupending_kvfree_rcu_latency_seconds_bucket{SEL}{RATE})))",
                    f"p{int(q * 100)} {{{{instance}}}}",
                )
                for q in (0.5, 0.9, 0.99)
            ]
            + [
                (
                    f"histogram_quantile(0.99, sum by (le, path, instance) "
                    f"(rate(rcupending_kvfree_rcu_latency_by_path_seconds_bucket{SEL}{RATE})))",
                    "p99 {{path}} {{instance}}",
                )
            ],
            0,
            y,
            12,
            8,
            unit="s",
            description="log2 buckets: quantiles are bucket upper bounds",
        )
    )
    p.append(
        panel(
            "Grace periods waited (+1)",
            "timeseries",
            [
                (
                    f"histogram_quantile({q}, sum by (le, instance) "
                    f"(rate(rcupending_kvfree_rcu_latency_grace_periods_bucket{SEL}{RATE})))",
                    f"p{int(q * 100)} {{{{instance}}}}",
                )
                for q in (0.5, 0.99)
            ]
            + [
                (
                    f"histogram_quantile(0.99, sum by (le, path, instance) "
                    f"(rate(rcupending_kvfree_rcu_latency_by_path_grace_periods_bucket{SEL}{RATE})))",
                    "p99 {{path}} {{instance}}",
                )
            ],
            12,
            y,
            12,
            8,
        )
    )
    y += 8
    p.append(
        panel(
            "Top processes by pending (stranded) bytes",
            "bargauge",
            [
                (
                    f"topk(10, rcupending_kvfree_rcu_process_pending_bytes{SEL})",
                    "{{comm}} [{{tgid}}] {{instance}}",
                )
            ],
            0,
            y,
            12,
            8,
            unit="bytes",
        )
    )
    p.append(
        panel(
            "Top processes: kvfree_rcu enqueues / s",
            "timeseries",
            [
                (
                    "topk(10, rate(rcupending_kvfree_rcu_process_enqueued_objects_total"
                    f"{SEL}{RATE}))",
                    "{{comm}} [{{tgid}}] {{instance}}",
                )
            ],
            12,
            y,
            12,
            8,
            unit="ops",
            description="the collector keeps the top 20 processes per snapshot",
        )
    )
    y += 8
    p.append(
        panel(
            "Tracking health",
            "timeseries",
            [
                (
                    f"increase(rcupending_kvfree_rcu_untracked_objects_total{SEL}{RATE})",
                    "untracked objects {{instance}}",
                ),
                (
                    f"increase(rcupending_kvfree_rcu_untracked_bytes_total{SEL}{RATE})",
                    "untracked bytes {{instance}}",
                ),
                (
                    f"increase(rcupending_kvfree_rcu_replaced_objects_total{SEL}{RATE})",
                    "replaced {{instance}}",
                ),
                (
                    f"increase(rcupending_kvfree_rcu_freed_pre_attach_objects_by_path_total{SEL}{RATE})",
                    "pre-attach frees {{path}} {{instance}}",
                ),
                (
                    f"increase(rcupending_kvfree_rcu_enqueued_unsized_objects_total{SEL}{RATE})",
                    "unsized {{instance}}",
                ),
                (
                    f"increase(rcupending_kvfree_rcu_enqueued_vmalloc_objects_total{SEL}{RATE})",
                    "vmalloc {{instance}}",
                ),
            ],
            0,
            y,
            24,
            6,
            description="untracked: the per-object map was full; replaced: an address enqueued "
            "again before its free was seen; pre-attach: frees of objects enqueued before attach",
        )
    )
    y += 6
    p.append(row("rcu_pending", y))
    p.append(
        panel(
            "rcu_pending enqueues / s",
            "timeseries",
            [
                (
                    f"rate(rcupending_rcu_pending_enqueued_objects_total{SEL}{RATE})",
                    "all {{instance}}",
                ),
                (
                    f"rate(rcupending_rcu_pending_enqueued_objects_by_cpu_total{SEL}{RATE})",
                    "CPU {{cpu}} {{instance}}",
                ),
            ],
            0,
            y + 1,
            12,
            7,
            unit="ops",
        )
    )
    p.append(
        panel(
            "Top processes: rcu_pending enqueues / s",
            "timeseries",
            [
                (
                    "topk(10, rate(rcupending_rcu_pending_process_enqueued_objects_total"
                    f"{SEL}{RATE}))",
                    "{{comm}} [{{tgid}}] {{instance}}",
                )
            ],
            12,
            y + 1,
            12,
            7,
            unit="ops",
        )
    )
    y += 8
    p.append(row("nolock page allocator", y))
    p.append(
        panel(
            "nolock allocations and failures / s",
            "timeseries",
            [
                (f"rate(rcupending_nolock_attempts_total{SEL}{RATE})", "attempts {{instance}}"),
                (f"rate(rcupending_nolock_failures_total{SEL}{RATE})", "failures {{instance}}"),
            ],
            0,
            y + 1,
            12,
            7,
            unit="ops",
            description="alloc_pages_nolock/try_alloc_pages, or the kmem:mm_page_alloc stand-in "
            "(see Probes)",
        )
    )
    p.append(
        panel(
            "nolock per CPU / s",
            "timeseries",
            [
                (
                    f"rate(rcupending_nolock_attempts_by_cpu_total{SEL}{RATE})",
                    "attempts CPU {{cpu}} {{instance}}",
                ),
                (
                    f"rate(rcupending_nolock_failures_by_cpu_total{SEL}{RATE})",
                    "failures CPU {{cpu}} {{instance}}",
                ),
            ],
            12,
            y + 1,
            12,
            7,
            unit="ops",
        )
    )
    y += 8
    p.append(
        panel(
            "nolock by order / s",
            "timeseries",
            [
                (
                    f"rate(rcupending_nolock_attempts_by_order_total{SEL}{RATE})",
                    "attempts order {{order}} {{instance}}",
                ),
                (
                    f"rate(rcupending_nolock_failures_by_order_total{SEL}{RATE})",
                    "failures order {{order}} {{instance}}",
                ),
                (
                    f"rate(rcupending_nolock_obtained_bytes_total{SEL}{RATE}) / 4096",
                    "pages {{instance}}",
                ),
            ],
            0,
            y,
            8,
            7,
            unit="ops",
        )
    )
    p.append(
        panel(
            "nolock by context / s",
            "timeseries",
            [
                (
                    f"rate(rcupending_nolock_attempts_by_context_total{SEL}{RATE})",
                    "attempts {{context}} {{instance}}",
                ),
                (
                    f"rate(rcupending_nolock_failures_by_context_total{SEL}{RATE})",
                    "failures {{context}} {{instance}}",
                ),
                (
                    f"rate(rcupending_nolock_missed_events_by_reason_total{SEL}{RATE})",
                    "probe misses ({{reason}}) {{instance}}",
                ),
            ],
            8,
            y,
            8,
            7,
            unit="ops",
            description="context from the per-CPU preempt count; misses: runs the kernel "
            "skipped (BPF recursion, kprobe nmissed)",
        )
    )
    p.append(
        panel(
            "nolock by call site / s",
            "timeseries",
            [
                (
                    f"rate(rcupending_nolock_attempts_by_caller_total{SEL}{RATE})",
                    "attempts {{caller}} {{instance}}",
                ),
                (
                    f"rate(rcupending_nolock_failures_by_caller_total{SEL}{RATE})",
                    "failures {{caller}} {{instance}}",
                ),
            ],
            16,
            y,
            8,
            7,
            unit="ops",
            description="first stack frame after the last nolock frame (top 20)",
        )
    )
    y += 7
    p.append(row("Collector health", y))
    p.append(
        panel(
            "Lost events",
            "timeseries",
            [
                (f"increase(rcupending_lost_events_total{SEL}{RATE})", "all {{instance}}"),
                (
                    f"increase(rcupending_lost_events_by_reason_total{SEL}{RATE})",
                    "{{reason}} {{instance}}",
                ),
            ],
            0,
            y + 1,
            12,
            6,
            description="events the kernel side could not record (per-task map full: the per-task "
            "split misses them, totals stay exact)",
        )
    )
    p.append(
        panel(
            "Tool's own CPU (share of one CPU)",
            "timeseries",
            [
                (f"rate(rcupending_self_cpu_seconds_total{SEL}{RATE})", "user+sys {{instance}}"),
                (
                    f"rate(rcupending_self_bpf_run_seconds_total{SEL}{RATE})",
                    "its BPF programs {{instance}}",
                ),
            ],
            12,
            y + 1,
            12,
            6,
            unit="percentunit",
            description="user+system CPU of the collecting process since attach; its BPF "
            "programs' run time only while BPF stats are enabled (kernel.bpf_stats_enabled)",
        )
    )
    y += 7
    p.append(
        panel(
            "Tool's resident memory",
            "timeseries",
            [(f"rcupending_self_rss_bytes{SEL}", "rss {{instance}}")],
            0,
            y,
            8,
            6,
            unit="bytes",
        )
    )
    p.append(
        panel(
            "Tool's BPF program runs / s",
            "timeseries",
            [(f"rate(rcupending_self_bpf_run_events_total{SEL}{RATE})", "runs {{instance}}")],
            8,
            y,
            8,
            6,
            unit="ops",
            description="only while BPF stats are enabled",
        )
    )
    p.append(
        panel(
            "Tool's BPF time per run",
            "timeseries",
            [
                (
                    f"rate(rcupending_self_bpf_run_seconds_total{SEL}{RATE}) / "
                    f"rate(rcupending_self_bpf_run_events_total{SEL}{RATE})",
                    "mean {{instance}}",
                )
            ],
            16,
            y,
            8,
            6,
            unit="s",
            description="only while BPF stats are enabled",
        )
    )
    return {
        "title": "rcupending: memory waiting behind RCU",
        "uid": "rcupending",
        "description": "Metrics of `rcupending serve` (one process per kernel; Prometheus "
        "carries the fleet). Families: rcupending_*.",
        "tags": ["rcupending", "rcu", "ebpf"],
        "schemaVersion": 39,
        "version": 1,
        "editable": True,
        "time": {"from": "now-15m", "to": "now"},
        "refresh": "10s",
        "templating": {
            "list": [
                {
                    "name": "datasource",
                    "type": "datasource",
                    "query": "prometheus",
                    "label": "Prometheus",
                },
                {
                    "name": "instance",
                    "type": "query",
                    "datasource": DS,
                    "label": "instance",
                    "query": {
                        "query": "label_values(rcupending_source_info, instance)",
                        "refId": "instance",
                    },
                    "definition": "label_values(rcupending_source_info, instance)",
                    "includeAll": True,
                    "multi": True,
                    "allValue": ".*",
                    "refresh": 2,
                },
            ]
        },
        "panels": p,
    }


if __name__ == "__main__":
    out = Path(__file__).with_name("rcupending.json")
    out.write_text(json.dumps(dashboard(), indent=2) + "\n")
    print(out)
