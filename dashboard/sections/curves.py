"""Robust PSNR against ε, oblivious and adaptive side by side; and against attack iterations."""

import altair as alt
import streamlit as st

import common

db, tid = common.db_url(), common.tournament_id()
st.title("PSNR vs ε")
st.caption("ε = 0 is the clean PSNR of the defended system. ALL: the worst case over the chosen "
           "attacks. A curve that does not fall as ε grows hints at a weak attack or masked gradients.")

opts = common.view("options", db, tid)
if not opts["norm"]:
    st.info("No scored matches yet.")
    st.stop()
c1, c2, c3, c4 = st.columns(4)
norm = c1.selectbox("Norm", opts["norm"])
restorers = c2.multiselect("Restorer", opts["restorer"], placeholder="all")
defenses = c3.multiselect("Defense", opts["defense"], placeholder="all")
attacks = c4.multiselect("Attacks", ["ALL", *opts["attack"]], default=["ALL"],
                         help="ALL is the worst case over every attack (or over those chosen here).")
chosen = [a for a in attacks if a != "ALL"]
rows = common.view("eps_curves", db, tid, norm=norm, restorers=restorers or None,
                   defenses=defenses or None, attacks=chosen or None)
rows = [r for r in rows if r["attack"] in (attacks or ["ALL"])]
if not rows:
    st.info("No scored matches for this selection.")
    st.stop()

data = common.frame(rows, ["threat", "restorer", "defense", "system", "attack", "eps", "robust_psnr", "clean_psnr"])
data["eps_255"] = data["eps"] * 255
lo, hi = data["robust_psnr"].min(), data["robust_psnr"].max()
pad = max(0.5, 0.05 * (hi - lo))
# colour by defense (the undefended system first), one panel per restorer, a dash per attack:
# few enough colours to tell apart, and the same colour means the same defense in every panel
defenses_shown = sorted(set(data["defense"]), key=lambda d: (d != "none", d))
attacks_shown = sorted(set(data["attack"]), key=lambda a: (a != "ALL", a))
legend = dict(orient="bottom", direction="horizontal", columns=6, symbolStrokeWidth=3, symbolSize=300)
# the panels share the page's width: about 820 px beside the sidebar
panel_px = max(180, 820 // max(1, data["restorer"].nunique()))
for threat in ("oblivious", "adaptive"):
    st.subheader(threat)
    part = data[data["threat"] == threat]
    if part.empty:
        st.info(f"No {threat} matches.")
        continue
    chart = alt.Chart(part).mark_line(point=alt.OverlayMarkDef(size=30)).encode(
        x=alt.X("eps_255:Q", title=f"ε ({norm}, ×1/255)"),
        # one y scale for both threat models and every panel, so they compare at a glance
        y=alt.Y("robust_psnr:Q", title="robust PSNR (dB)", scale=alt.Scale(domain=[lo - pad, hi + pad])),
        color=alt.Color("defense:N", title="defense", sort=defenses_shown,
                        scale=alt.Scale(domain=defenses_shown, scheme="tableau10"), legend=alt.Legend(**legend)),
        strokeDash=alt.StrokeDash("attack:N", title="attack", sort=attacks_shown,
                                  legend=alt.Legend(symbolType="stroke", symbolStrokeColor="black", **legend)),
        detail="system:N",
        tooltip=["restorer", "defense", "attack", alt.Tooltip("eps_255:Q", format=".2f", title="ε×255"),
                 alt.Tooltip("robust_psnr:Q", format=".2f")],
    ).properties(height=300, width=panel_px).facet(
        column=alt.Column("restorer:N", title="restorer"))
    st.altair_chart(chart)
shown_columns = ["threat", "restorer", "defense", "attack", "eps", "eps_255", "robust_psnr", "clean_psnr"]
st.download_button("These curves (CSV)", data[shown_columns].assign(norm=norm).to_csv(index=False),
                   file_name=f"eps_curves_{norm}.csv", mime="text/csv", key="curves-csv",
                   help="One row per point of the figures above: threat model, system, attack (ALL: the worst "
                        "case), ε (ε = 0: clean), robust PSNR in dB.")

st.header("PSNR vs attack iterations")
st.caption("Per white-box match on an MSE objective: the PSNR of its best mean loss so far after each "
           "gradient call (for the adaptive MSE objective, against the ground truth). A curve still "
           "falling over its last quarter by more than 0.1 dB is not converged: more iterations would "
           "lower the robust PSNR.")
eps_choices = sorted({float(e) for e in data["eps"] if e > 0})
e1, e2 = st.columns(2)
eps = e1.selectbox("ε (×1/255)", eps_choices, format_func=lambda e: f"{e * 255:.3g}")
threat = e2.selectbox("Threat model", ["adaptive", "oblivious"])
curves = common.view("convergence_curves", db, tid, norm=norm, restorers=restorers or None,
                     defenses=defenses or None, attacks=chosen or None)
curves = [r for r in curves if abs(r["eps"] - eps) < 1e-9 and r["threat"] == threat]
if not curves:
    st.info("No iterative MSE-objective matches for this selection.")
else:
    trace = common.frame(curves, ["system", "attack", "seed", "iteration", "robust_psnr", "converged"])
    trace[["restorer", "defense"]] = trace["system"].str.split(" + ", n=1, expand=True, regex=False)
    shown = sorted(set(trace["defense"]), key=lambda d: (d != "none", d))
    chart = alt.Chart(trace).mark_line().encode(
        x=alt.X("iteration:Q", title="gradient calls"),
        y=alt.Y("robust_psnr:Q", title="PSNR of the best loss (dB)", scale=alt.Scale(zero=False)),
        color=alt.Color("defense:N", title="defense", sort=shown, scale=alt.Scale(domain=shown, scheme="tableau10"),
                        legend=alt.Legend(**legend)),
        strokeDash=alt.StrokeDash("attack:N", title="attack",
                                  legend=alt.Legend(symbolType="stroke", symbolStrokeColor="black", **legend)),
        detail=["system:N", "seed:N"],
        tooltip=["system", "attack", "iteration", alt.Tooltip("robust_psnr:Q", format=".2f"), "converged"],
    ).properties(height=300, width=panel_px).facet(column=alt.Column("restorer:N", title="restorer"))
    st.altair_chart(chart)
    st.download_button("These traces (CSV)", trace[["restorer", "defense", "attack", "seed", "iteration",
                                                    "robust_psnr", "converged"]]
                       .assign(threat=threat, norm=norm, eps=eps).to_csv(index=False),
                       file_name=f"convergence_{threat}_{norm}_{eps * 255:.3g}.csv", mime="text/csv",
                       key="traces-csv")
