"""The fleet report: the figures as text, and a PNG chart of license states over simulated time."""

from __future__ import annotations

from pathlib import Path
from typing import Any

STATE_ORDER = (
    "license_missing",
    "trial_active",
    "trial_expired",
    "licensed_active",
    "licensed_grace",
    "licensed_renewal_required",
    "licensed_cancelled",
    "license_error",
)
COLOURS = ("#bbbbbb", "#4a90d9", "#a0522d", "#2e8b57", "#e0b040", "#f08030", "#c03030", "#700000")


def chart(
    samples: list[tuple[float, dict[str, int]]],
    faults: list[tuple[float, float, str]],
    path: Path,
    title: str,
) -> None:
    """A stacked area chart of agents per state, with the injected faults marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    days = [t / 86400 for t, _ in samples]
    series = [[counts.get(state, 0) for _, counts in samples] for state in STATE_ORDER]
    fig, ax = plt.subplots(figsize=(11, 5.5), dpi=100)
    ax.stackplot(days, series, labels=STATE_ORDER, colors=COLOURS, alpha=0.9)
    for start, _end, name in faults:
        ax.axvline(start / 86400, color="black", linestyle=":", linewidth=0.8)
        ax.text(start / 86400, ax.get_ylim()[1] * 0.98, name, rotation=90, fontsize=7, va="top", ha="right")
    ax.set_xlabel("simulated day")
    ax.set_ylabel("agents")
    ax.set_title(title)
    ax.set_xlim(0, max(days) if days else 1)
    ax.legend(loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def text(r: dict[str, Any]) -> str:
    """The report's text."""
    srv, errs = r["server_checks"], r["errors"]
    lines = [
        f"# Fleet simulation: {r['agents']} agents, {r['days']:g} simulated days, {r['backend']}",
        "",
        f"run: {r['started']}, {r['wall_s']:.0f} s wall ({r['timing']}), {r['workers']} agent processes, "
        f"seed {r['seed']}",
        f"faults: {', '.join(f'{name} at day {a / 86400:.2f}' for a, _b, name in r['faults'])}",
        "",
        "## Must be zero",
        f"agents in the wrong state:        {len(r['states']['wrong'])}",
        f"emails lost:                      {srv['emails_lost']}",
        f"emails duplicated:                {srv['emails_duplicated']}",
        f"webhook events not processed:     {srv['events_not_processed'] + r['deliveries_failed']}",
        f"audit gaps:                       {len(srv['audit_gaps'])}",
        f"replacements refused (dead till): {len(srv.get('replacements_refused', []))}",
        f"5xx outside injected faults:      {errs['outside_faults']}",
        f"server errors never retried ok:   {errs['not_retried_ok']}",
        f"agent-side exceptions:            {r['agent_exceptions']}",
        f"old tills moved wrongly:          {len(r['migrations']['wrong'])}",
        f"duplicate customers/subs/imports: {len(srv['duplicates'])}",
        f"pauses/resumes without audit row: {len(srv['pause_audit_gaps'])}",
        f"invoices collected while paused:  {len(srv['collected_while_paused'])}",
        "",
        f"emails sent again after a server SIGKILL, same Message-ID (at most one per kill): "
        f"{srv.get('emails_redelivered', 0)} (kills: {len(r.get('kills', []))})",
        "",
        "## Figures",
        f"server errors seen by agents:     {errs['total']} (5xx or no answer; by fault: {errs['by_fault']}; "
        f"no answer outside faults (keep-alive race, retried): {errs['no_answer_outside_faults']})",
        f"requests:                         {r['requests']} ({r['requests_per_agent_day']:.2f}/agent/day)",
        f"requests by route:                {r['by_route']}",
        f"server peak req/s (1 s buckets):  {r['peak_rps']}",
        f"latency p50 / p99 / max:          {r['p50_ms']:.1f} / {r['p99_ms']:.1f} / {r['max_ms']:.1f} ms "
        "(seen by agents, loopback)",
        f"server RSS:                       peak {r['rss_peak_mib']:.0f} MiB, end {r['rss_end_mib']:.0f} MiB",
        f"server starts:                    {r['server_starts']} (1 + {len(r['kills'])} after SIGKILL)",
        f"webhook events:                   {srv['events_total']} processed; {r['deliveries']} deliveries "
        f"({r['duplicates_delivered']} duplicates answered 'duplicate', {r['reordered']} reordered)",
        f"emails:                           {srv['emails_received']} received by the sink, "
        f"{srv['outbox_retried']} needed retries, {r['sink_refused']} refusals during the outage",
        f"emails by template:               {srv['emails_by_template']}",
        f"outbox by status:                 {srv['outbox_by_status']}",
        f"audit rows:                       {srv['audit_rows']}",
        f"final states:                     {dict(r['states']['final_states'])}",
        f"old POSPal import:                {r['import_lines'][-1] if r['import_lines'] else 'none'}",
        f"old tills' take-over outcomes:    {r['migrations']['outcomes']}",
        f"paused season:                    {srv['pause_windows']} pauses; {r['states']['observed']} till "
        f"states checked during and after them; {r['states']['paused_at_end']} tills paused at the end",
    ]
    if r["states"]["wrong"]:
        lines += ["", "## Wrong states (first 20)"] + [str(w) for w in r["states"]["wrong"][:20]]
    if errs["samples"]:
        lines += ["", "## Errors not inside a fault or not retried (first 20)"] + errs["samples"]
    if srv["audit_gaps"]:
        lines += ["", "## Audit gaps (first 20)"] + srv["audit_gaps"][:20]
    for title, found in (
        ("Old tills moved wrongly", [str(w) for w in r["migrations"]["wrong"]]),
        ("Duplicates", srv["duplicates"]),
        ("Pauses and resumes without an audit row", srv["pause_audit_gaps"]),
        ("Collected while paused", srv["collected_while_paused"]),
    ):
        if found:
            lines += ["", f"## {title} (first 20)"] + found[:20]
    if srv["emails_lost"] or srv["emails_duplicated"]:
        lines += ["", "## Email problems", str(srv["email_problems"])]
    if r.get("start_failures"):
        lines += ["", "## Server restarts that failed (then started again)"] + r["start_failures"]
    if r["exception_samples"]:
        lines += ["", "## Agent-side exceptions (first 5)"] + r["exception_samples"][:5]
    return "\n".join(lines) + "\n"
