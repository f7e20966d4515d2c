"""Attack x defense heat map of robust PSNR for one restorer and budget."""

import altair as alt
import pandas as pd
import streamlit as st

import common

db, tid = common.db_url(), common.tournament_id()
st.title("Matrix")
st.caption("Each cell: robust PSNR of the restorer behind that defense against that attack alone "
           "(mean over images of the per-image worst case over its seeds). Row ALL: the worst "
           "case over every attack, as on the leaderboard.")

opts = common.view("options", db, tid)
budgets = common.view("budgets", db, tid)
if not budgets:
    st.info("No scored matches yet.")
    st.stop()
c1, c2 = st.columns(2)
restorer = c1.selectbox("Restorer", opts["restorer"])
budget = c2.selectbox("Threat model and budget", budgets, format_func=common.budget_label,
                      index=len(budgets) - 1)
cells = common.view("matrix", db, tid, restorer=restorer, threat=budget["threat"],
                    norm=budget["norm"], eps=budget["eps"])
if not cells:
    st.info(f"No scored matches for {restorer} at {common.budget_label(budget)}.")
    st.stop()

data = common.frame(cells, ["attack", "defense", "robust_psnr", "clean_psnr", "n_images"])
kinds = {r["attack"]: r["attack_kind"] for r in common.view("attack_ranking", db, tid)}
noise = {a for a, k in kinds.items() if k == "decision-free"}
# a "clean" row (the defended system on clean input) above the attacks, ALL (the worst case) last
clean = data.groupby("defense", as_index=False)["clean_psnr"].mean()
data = pd.concat([data, clean.assign(attack="clean", robust_psnr=clean["clean_psnr"], n_images=None)],
                 ignore_index=True)
order = ["clean"] + sorted({c["attack"] for c in cells} - {"ALL"}) + ["ALL"]
columns = sorted(set(data["defense"]), key=lambda d: (d != "none", d))  # the undefended system first
floor_out = st.toggle("Noise floor and clean row out of the colour scale", value=True,
                      help="Decision-free noise attacks and clean input barely lower the PSNR; left out, the "
                           "colours spread over the attacks that matter (cells beyond the scale are clamped).")
scaled = data[~data["attack"].isin(noise | {"clean"})] if floor_out else data
domain = [float(scaled["robust_psnr"].min()), float(scaled["robust_psnr"].max())]
base = alt.Chart(data).encode(
    x=alt.X("defense:N", title="defense", sort=columns, axis=alt.Axis(labelAngle=0, orient="top")),
    y=alt.Y("attack:N", title="attack", sort=order),
)
heat = base.mark_rect().encode(
    color=alt.Color("robust_psnr:Q", title="robust PSNR (dB)",
                    scale=alt.Scale(scheme="viridis", domain=domain, clamp=True),
                    legend=alt.Legend(gradientLength=max(60, 60 * len(order) - 40))),
    tooltip=["attack", "defense", alt.Tooltip("robust_psnr:Q", format=".2f"),
             alt.Tooltip("clean_psnr:Q", format=".2f"), "n_images"],
)
middle = sum(domain) / 2
labels = base.mark_text(baseline="middle", fontSize=13).encode(
    text=alt.Text("robust_psnr:Q", format=".2f"),
    # dark text on the bright end of viridis, light on the dark end
    color=alt.condition(alt.datum.robust_psnr > middle, alt.value("black"), alt.value("white")),
)
rows_px = 60 * len(order)
st.altair_chart((heat + labels).properties(height=rows_px), width="stretch", height=rows_px + 80)
table = data[data["attack"] != "clean"].pivot(index="attack", columns="defense", values="robust_psnr") \
    .reindex([o for o in order if o != "clean"])[columns]
st.dataframe(table, column_config={c: common.number(c) for c in table.columns}, key="matrix-table")
