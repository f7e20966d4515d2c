"""Runs: tournaments, their configs and versions, failures, and how to reproduce any match."""

import json

import streamlit as st

import common

db, tid = common.db_url(), common.tournament_id()
display = common.display
st.title("Runs")


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m // 60} h {m % 60:02d} min" if m >= 60 else f"{m} min {s:02d} s"


def progress(p: dict) -> None:
    """Counts while a tournament runs, redrawn in place at every look of common.auto_refresh."""
    c = p["counts"]
    done, failed = c.get("done", 0), c.get("failed", 0) + c.get("disqualified", 0)
    st.subheader("Running now" if p["active"] else "Progress")
    cols = st.columns(7)
    planned = p["planned"] if p["planned"] is not None else "—" if p["active"] else p["stored"] + p["running"]
    cols[0].metric("planned", planned, help="as the driver planned its last run (— while it plans; a database "
                   "from before m006: stored + in flight)")
    cols[1].metric("done", done)
    cols[2].metric("running", p["running"], help="claimed by a driver and not yet stored")
    cols[3].metric("failed", failed, help="failed or disqualified")
    cols[4].metric("skipped", c.get("skipped", 0))
    rate = p["rate_per_min"]
    cols[5].metric("rate", f"{rate:.1f}/min" if rate else "—",
                   help="matches stored per minute since the first started, from the stored timings")
    cols[6].metric("ETA", duration(p["eta_s"]) if p["eta_s"] is not None else "—",
                   help="the matches still to store, at the rate so far")
    span = (p["last_finished"] - p["first_started"]) if p["first_started"] and p["last_finished"] else None
    note = ""
    if p["active"]:
        note = f" · refreshes every {common.ACTIVE_REFRESH_S} s while the tournament runs"
        if not p["running"]:
            note += (f" (finishing: {p['unverified']} matches wait for their fresh re-score)"
                     if p["planned"] is not None and p["stored"] >= p["planned"] else " (starting: no match in flight yet)")
    st.caption(f"matches ran for {duration(span)}" + (f"; last result {duration(p['now'] - p['last_finished'])} ago"
                                                       if p["last_finished"] else "") + note)


first = common.auto_refresh(db, tid, progress)
tournaments = common.query("tournaments", db)
if not tournaments:
    st.info("No tournament stored yet.")
    st.stop()
for t in tournaments:
    t["matches"] = ", ".join(f"{n} {s}" for s, n in sorted(common.query("status_counts", db, t["id"]).items()))
st.dataframe(common.frame(tournaments, ["id", "name", "created_at", "updated_at", "matches", "seed", "code_version",
                                        "data_version", "host", "command"]),
             hide_index=True, key="tournaments", height=common.table_height(len(tournaments)),
             column_config={"id": st.column_config.NumberColumn("id", format="%d"),
                            "created_at": st.column_config.DatetimeColumn("created"),
                            "updated_at": st.column_config.DatetimeColumn("last run started")})

shown = [t for t in tournaments if tid is None or t["id"] == tid]
for t in shown:
    st.header(f"#{t['id']} {t['name']}")
    st.caption(f"code {t['code_version']} · data {t['data_version']} ({(t['data_hash'] or '')[:12]}) · "
               f"seed {t['seed']} · host {t['host']} · config hash {t['config_hash'][:12]}")
    if t["command"]:
        st.code(t["command"], language="bash")
    c1, c2 = st.columns(2)
    with c1.expander("Config", expanded=False):
        st.json(t["config"])
    with c2.expander("Plugin versions", expanded=False):
        st.json(t["plugin_versions"] or {})

st.header("Failed, disqualified and skipped matches")
problems = common.view("problem_matches", db, tid)
if not problems:
    if first["active"]:
        st.info("No failed, disqualified or skipped match so far; the tournament is still running.")
    else:
        st.success("Every stored match of this selection finished and was scored.")
else:
    for p in problems:  # a plugin's coloured traceback reads as plain text here
        p["command"] = display.reproduce_command(p["key"], db)
        p["reason"], p["error"] = display.strip_ansi(p["reason"]), display.strip_ansi(p["error"])
        p["eps"] = common.eps_label(p["norm"], p["eps"])
    st.dataframe(common.frame(problems, ["status", "blame", "threat", "eps", "restorer", "defense", "attack",
                                         "seed", "reason", "attempts", "key", "command"]),
                 hide_index=True, key="problems",
                 column_config={"reason": st.column_config.TextColumn("reason", width="large"),
                                "eps": st.column_config.TextColumn("ε")})
    with_error = [p for p in problems if p["error"]]
    if with_error:
        p = st.selectbox("Error of", with_error,
                         format_func=lambda p: (f"{p['status']}: {p['restorer']} + {p['defense']} · "
                                                f"{p['attack']} ({p['key']})"))
        st.code(p["error"], language="text")

all_matches = common.query("matches", db, tid)
st.header("Where matches ran")
placed: dict[tuple, dict] = {}
for m in all_matches:  # node: host name (Ray node id, its CPUs and GPUs), as the worker saw it
    row = placed.setdefault((m["node"] or "not recorded", m["device"] or ""),
                            {"node": m["node"] or "not recorded", "device": m["device"], "matches": 0, "hours": 0.0})
    row["matches"] += 1
    if m["started_at"] and m["finished_at"]:
        row["hours"] += (m["finished_at"] - m["started_at"]) / 3600
st.dataframe(common.frame(list(placed.values()), ["node", "device", "matches", "hours"]), hide_index=True,
             key="nodes", column_config={"hours": common.number("hours", "%.3f")})

st.header("Reproduce a match")
if all_matches:
    m = st.selectbox("Match", all_matches, key="reproduce-match",
                     format_func=lambda m: (f"{m['status']} · {m['threat']} · "
                                            f"{common.eps_label(m['norm'], m['eps'])} · "
                                            f"{m['restorer']} + {m['defense']} · {m['attack']} ({m['key']})"))
    st.code(display.reproduce_command(m["key"], db), language="bash")
    st.caption(f"code {m['code_version']} · node {m['node']} · device {m['device']} · "
               f"versions {json.dumps(m['versions'] or {})}")
    with st.expander("Match spec (what the key hashes)"):
        # the spec is the plan's, written before the match ran: its status is the stored one
        st.caption(f"stored status: {m['status']}")
        st.json({k: v for k, v in (m["spec"] or {}).items() if k != "status"})
