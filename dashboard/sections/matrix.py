"""Attack x defense heat maps of robust PSNR at one budget: a panel per restorer, side by side,
on one colour scale."""

import altair as alt
import pandas as pd
import streamlit as st

import common

db, tid = common.db_url(), common.tournament_id()
st.title("Matrix")
st.caption("Each cell: robust PSNR of the restorer behind that defense against that attack alone "
           "(mean over images of the per-image worst case over its seeds). Row clean: the defended "
           "system on clean input. Row ALL: the worst case over every attack, as on the leaderboard. "
           "Every panel shares one colour scale, so the same colour is the same PSNR in all of them.")

opts = common.view("options", db, tid)
budgets = common.view("budgets", db, tid)
if not budgets:
    st.info("No scored matches yet.")
    st.stop()
c1, c2 = st.columns(2)
chosen = c1.multiselect("Restorers", opts["restorer"], placeholder="all", key="matrix-restorers",
                        help="A panel per restorer, side by side.")
budget = c2.selectbox("Threat model and budget", budgets, format_func=common.budget_label,
                      index=len(budgets) - 1)
restorers = chosen or opts["restorer"]
cells = [dict(c, restorer=r) for r in restorers
         for c in common.view("matrix", db, tid, restorer=r, threat=budget["threat"],
                              norm=budget["norm"], eps=budget["eps"])]
if not cells:
    st.info(f"No scored matches for {', '.join(restorers)} at {common.budget_label(budget)}.")
    st.stop()
restorers = [r for r in restorers if any(c["restorer"] == r for c in cells)]

data = common.frame(cells, ["restorer", "attack", "defense", "robust_psnr", "clean_psnr", "n_images"])
kinds = {r["attack"]: r["attack_kind"] for r in common.view("attack_ranking", db, tid)}
noise = {a for a, k in kinds.items() if k == "decision-free"}
# a "clean" row (the defended system on clean input) above the attacks, ALL (the worst case) last
clean = data.groupby(["restorer", "defense"], as_index=False)["clean_psnr"].mean()
data = pd.concat([data, clean.assign(attack="clean", robust_psnr=clean["clean_psnr"], n_images=None)],
                 ignore_index=True)
order = ["clean"] + sorted({c["attack"] for c in cells} - {"ALL"}) + ["ALL"]
columns = sorted(set(data["defense"]), key=lambda d: (d != "none", d))  # the undefended system first
floor_out = st.toggle("Noise floor and clean row out of the colour scale", value=True,
                      help="Decision-free noise attacks and clean input barely lower the PSNR; left out, the "
                           "colours spread over the attacks that matter (cells beyond the scale are clamped).")
scaled = data[~data["attack"].isin(noise | {"clean"})] if floor_out else data
if scaled.empty:  # only noise attacks were run: nothing else to scale by
    scaled = data
domain = [float(scaled["robust_psnr"].min()), float(scaled["robust_psnr"].max())]

# the panels share the page's width (about 820 px beside the sidebar); long defense names tilt,
# every one shown (Vega would drop those whose boxes overlap)
panel_px = max(160, 820 // len(restorers) - 20)
tilt = 0 if panel_px / len(columns) >= 7 * max(len(c) for c in columns) else -40
base = alt.Chart().encode(
    x=alt.X("defense:N", title="defense", sort=columns,
            axis=alt.Axis(labelAngle=tilt, orient="top", labelOverlap=False, labelLimit=160)),
    y=alt.Y("attack:N", title="attack", sort=order),
)
heat = base.mark_rect().encode(
    color=alt.Color("robust_psnr:Q", title="robust PSNR (dB)",
                    scale=alt.Scale(scheme="viridis", domain=domain, clamp=True),
                    legend=alt.Legend(gradientLength=max(60, 40 * len(order)))),
    tooltip=["restorer", "attack", "defense", alt.Tooltip("robust_psnr:Q", format=".2f"),
             alt.Tooltip("clean_psnr:Q", format=".2f"), "n_images"],
)
middle = sum(domain) / 2
labels = base.mark_text(baseline="middle", fontSize=12).encode(
    text=alt.Text("robust_psnr:Q", format=".2f"),
    # dark text on the bright end of viridis, light on the dark end
    color=alt.condition(alt.datum.robust_psnr > middle, alt.value("black"), alt.value("white")),
)
rows_px = 40 * len(order)
chart = alt.layer(heat, labels, data=data).properties(width=panel_px, height=rows_px).facet(
    column=alt.Column("restorer:N", title="restorer", sort=restorers))
st.altair_chart(chart)

st.caption("The same cells as tables, one per restorer (dB).")
# side by side while two fit the page's width; stacked beyond (no column cut off)
boxes = st.columns(len(restorers)) if len(restorers) <= 2 else [st.container() for _ in restorers]
for restorer, box in zip(restorers, boxes):
    part = data[data["restorer"] == restorer]
    table = part.pivot(index="attack", columns="defense", values="robust_psnr") \
        .reindex([o for o in order if o in set(part["attack"])])[[c for c in columns if c in set(part["defense"])]]
    box.markdown(f"**{restorer}**")
    box.dataframe(table, column_config={c: common.number(c) for c in table.columns}, key=f"matrix-{restorer}",
                  height=common.table_height(len(table)))
