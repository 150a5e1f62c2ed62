"""``run.py top`` and ``run.py status``: the dashboard's numbers in a terminal.

Both GET ``/api/node`` from any worker's HTTP port (that worker merges its
siblings, see ``transport/node_status.py``). ``render`` is a pure function of
that view, so the layout is tested without a node. ``top`` redraws every
``--interval`` s with plain ANSI (home + clear), until Ctrl-C or
``--iterations``. ``status`` prints once and exits ``0`` when every worker is
up and no alert is raised, ``1`` when the node answers but is degraded
(a worker unreachable or an alert raised; in a cluster also a node down or
unreachable, or an alert on another node), ``2`` when it does not answer.
In a cluster both show a CLUSTER table (one row per node, from the view's
``cluster`` part) and the alerts of every node, with the node's name.

Also here: ``parse_settings``, the ``run.py node --set KEY=VALUE`` parser.
"""

from __future__ import annotations

import json
import sys
import time
import urllib.error
import urllib.request
from dataclasses import fields
from typing import Any

__all__ = ["fetch", "render", "render_cluster", "health", "main", "parse_settings", "OK", "DEGRADED", "UNREACHABLE"]

OK, DEGRADED, UNREACHABLE = 0, 1, 2
_EXTRA_SETTINGS = ("dashboard_push", "node_name", "lmdb_writer")
_CHOICES = {"lmdb_writer": ("thread", "process")}


def parse_settings(pairs: list[str], webhook: str | None = None) -> dict[str, Any]:
    """``["alert_actor_high=500", ...]`` -> config entries; unknown keys and
    bad values raise ``ValueError``."""
    from actors.monitor import MonitorSettings
    from transport.flow import FlowConfig
    known = {f.name: f.default for f in fields(MonitorSettings)}
    known.update({f.name: f.default for f in fields(FlowConfig)}, offline_cap=10_000,
                 max_watched=2_000, max_auth_failures=5, code_budget=1_000, max_blocked=10_000,
                 media_max_size=100 * 1024 * 1024,
                 outq_high=100_000, media_fetch_for=3600.0, media_fetch_wait=10.0,
                 forget_workers_after=60.0,
                 last_seen_flush=5.0, dedup_retention=30 * 86_400.0, dedup_prune_every=60.0)
    settings: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or (key not in known and key not in _EXTRA_SETTINGS):
            raise ValueError(f"--set {pair!r}: expected KEY=VALUE with KEY one of "
                             f"{', '.join(sorted([*known, *_EXTRA_SETTINGS]))}")
        settings[key] = _value(key, text.strip(), known.get(key))
    if webhook:
        settings["alert_webhook"] = webhook
    if settings:
        MonitorSettings.from_config(settings)            # validates the thresholds' types
    return settings


def _value(key: str, text: str, default: Any) -> Any:
    if key == "node_name":
        return text
    if key in _CHOICES:
        if text not in _CHOICES[key]:
            raise ValueError(f"--set {key}={text!r}: expected one of {', '.join(_CHOICES[key])}")
        return text
    if text.lower() in ("none", "off", ""):
        return None
    try:
        return int(text) if isinstance(default, int) and not isinstance(default, bool) \
            else float(text)
    except ValueError:
        raise ValueError(f"--set {key}={text!r}: not a number") from None


def fetch(host: str, port: int, timeout: float = 2.0) -> dict[str, Any]:
    """The node's view; raises ``OSError`` (``URLError``) when unreachable."""
    with urllib.request.urlopen(f"http://{host}:{port}/api/node", timeout=timeout) as response:
        return json.loads(response.read())


def _n(x: float) -> str:
    return f"{x:,.0f}" if abs(x) >= 10 or float(x).is_integer() else f"{x:,.1f}"


def render(view: dict[str, Any], top: int = 10) -> str:
    """The node's view as lines of text (see the module docstring)."""
    t, r = view["totals"], view["totals"]["rates"]
    clock = time.strftime("%H:%M:%S", time.localtime(view["at"]))
    lines = [
        f"Switchboard node {view['node'].get('name')}   {clock}   "
        f"workers {t['up']}/{t['workers']} up",
        f"actors {_n(t['actors'])}   queued {_n(t['queued'])}   max queue {_n(t['max_queue'])}"
        f"   connections {_n(t['connections'])}   alerts {t['alerts']}",
        f"rates/s  frames in {_n(r['frames_in'])}  out {_n(r['frames_out'])}   messages in "
        f"{_n(r['messages_in'])}  out {_n(r['messages_out'])}   store ops {_n(r['store_ops'])}"
        f"  commits {_n(r['commits'])}",
    ]
    store, offline = view.get("storage"), view.get("offline")
    tail = []
    if store:
        tail.append(f"commit p50 {store['median_commit_ms']:.1f} ms  p99 "
                    f"{store['p99_commit_ms']:.1f} ms  pending {store['pending']}")
    if offline:
        tail.append(f"offline {_n(offline['users'])} users  {_n(offline['messages'])} msgs  "
                    f"{_n(offline['receipts'])} receipts  longest {_n(offline['max'])}")
    if tail:
        lines.append("   ".join(tail))
    cluster = view.get("cluster")
    alerts = cluster["alerts"] if cluster else view["alerts"]
    lines += ["", f"ALERTS ({len(alerts)})"]
    lines += [f"  ! {a['node'] + ' ' if cluster else ''}w{a['worker']} {a['text']} "
              f"(for {a.get('for_s') or 0:.0f} s)" for a in alerts[:top]] or ["  none"]
    if cluster:
        lines += ["", *render_cluster(cluster)]
    lines += ["", f"{'WORKER':>6} {'PID':>7} {'PORT':>6} {'ACTORS':>9} {'QUEUED':>9} "
                  f"{'MAXQ':>7} {'CONNS':>7} {'RSS MB':>7} {'LAG ms':>7} {'SAMPLE ms':>9}"]
    for w in view["workers"]:
        if not w["up"]:
            lines.append(f"{w['slot']:>6} {'-':>7} {w['port'] or '-':>6}   DOWN: {w.get('error')}")
            continue
        lines.append(f"{w['slot']:>6} {w['pid']:>7} {w['port'] or '-':>6} {w['actors']:>9,} "
                     f"{w['queued']:>9,} {w['max_queue']:>7,} {w['connections']:>7,} "
                     f"{w['rss_bytes'] / 2**20:>7.0f} {w['loop_lag_ms']:>7.1f} "
                     f"{w['sample_ms']:>9.2f}")
    lines += ["", f"{'KIND':<24} {'COUNT':>9} {'QUEUED':>9} {'MAX':>7}"]
    lines += [f"{kind:<24} {k['count']:>9,} {k['queued']:>9,} {k['max']:>7,}"
              for kind, k in list(view["kinds"].items())[:top]]
    lines += ["", f"{'QUEUE':>7}  TOP MAILBOXES"]
    lines += [f"{row['queue']:>7,}  w{row['worker']} {row['actor']}" for row in view["top"][:top]]
    restarts = view["restarts"]
    lines += ["", f"RESTARTS ({sum(x['count'] for x in restarts)})"]
    lines += [f"  w{x['worker']} {x['supervisor']} / {x['child']}: {x['count']}"
              for x in restarts[:top]] or ["  none"]
    return "\n".join(lines)


def render_cluster(cluster: dict[str, Any]) -> list[str]:
    """The CLUSTER table: one line per node of the view's ``cluster`` part."""
    lines = [f"CLUSTER  {cluster['up']}/{len(cluster['nodes'])} nodes up",
             f"{'NODE':<10} {'STATE':<12} {'CLIENTS AT':<22} {'CONNS':>7} {'ACTORS':>9} "
             f"{'MAXQ':>7} {'MSG IN/s':>9} {'QUEUED TO':>24} {'ALERTS':>6}"]
    for n in cluster["nodes"]:
        s = n["summary"]
        queued = _queued_to(n)
        head = f"{n['name'] + ('*' if n['self'] else ''):<10} {n['state']:<12} {n['client'] or '-':<22}"
        if s is None:
            lines.append(f"{head} {'':>7} {'':>9} {'':>7} {'':>9} {queued:>24}   {n['error']}")
            continue
        lines.append(f"{head} {s['connections']:>7,} {s['actors']:>9,} {s['max_queue']:>7,} "
                     f"{_n(s['messages_in']):>9} {queued:>24} {len(s['alerts']):>6}")
    return lines


def _queued_to(row: dict[str, Any]) -> str:
    """Items queued for a node, and the group items folded for it past
    ``outq_high`` beside them: "1,234 (+5,000 folded)"."""
    if row["queued_to"] is None:
        return "-"
    folded = row.get("folded_to") or 0
    return f"{row['queued_to']:,}" + (f" (+{folded:,} folded)" if folded else "")


def health(view: dict[str, Any]) -> int:
    """``OK`` or ``DEGRADED`` for a node that answered."""
    t, cluster = view["totals"], view.get("cluster")
    if t["up"] != t["workers"] or t["alerts"]:
        return DEGRADED
    if cluster and (cluster["down"] or cluster["alerts"]):
        return DEGRADED
    return OK


def main(args: Any) -> int:
    if args.command == "status":
        try:
            view = fetch(args.host, args.http_port)
        except (OSError, ValueError) as exc:
            print(f"node at {args.host}:{args.http_port} unreachable: {exc}", file=sys.stderr)
            return UNREACHABLE
        print(render(view, top=5))
        return health(view)
    count = 0
    try:
        while not args.iterations or count < args.iterations:
            count += 1
            try:
                text = render(fetch(args.host, args.http_port, timeout=max(1.0, args.interval)))
            except (OSError, ValueError) as exc:
                text = f"node at {args.host}:{args.http_port} unreachable: {exc}"
            sys.stdout.write("\x1b[H\x1b[2J" + text + "\n")
            sys.stdout.flush()
            if not args.iterations or count < args.iterations:
                time.sleep(args.interval)
    except KeyboardInterrupt:
        pass
    return OK
