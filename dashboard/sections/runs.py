"""Runs: tournaments, their configs and versions, failures, and how to reproduce any match."""

import json

import streamlit as st

import common

db, tid = common.db_url(), common.tournament_id()
display = common.display
st.title("Runs")

tournaments = common.query("tournaments", db)
if not tournaments:
    st.info("No tournament stored yet.")
    st.stop()
for t in tournaments:
    t["matches"] = ", ".join(f"{n} {s}" for s, n in sorted(common.query("status_counts", db, t["id"]).items()))
st.dataframe(common.frame(tournaments, ["id", "name", "updated_at", "matches", "seed", "code_version",
                                        "data_version", "host", "command"]),
             hide_index=True, key="tournaments",
             column_config={"id": st.column_config.NumberColumn("id", format="%d"),
                            "updated_at": st.column_config.DatetimeColumn("last run")})

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
    st.success("Every match of this selection finished and was scored.")
else:
    for p in problems:  # a plugin's coloured traceback reads as plain text here
        p["command"] = display.reproduce_command(p["key"], db)
        p["reason"], p["error"] = display.strip_ansi(p["reason"]), display.strip_ansi(p["error"])
    st.dataframe(common.frame(problems, ["status", "blame", "threat", "norm", "eps", "restorer", "defense", "attack",
                                         "seed", "reason", "attempts", "key", "command"]),
                 hide_index=True, key="problems",
                 column_config={"reason": st.column_config.TextColumn("reason", width="large"),
                                "eps": common.number("ε", "%.4f")})
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
        st.json(m["spec"])
