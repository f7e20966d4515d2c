"""Gallery: what an attack does to one image, from UDC input to restored output."""

import streamlit as st
from PIL import Image

import common

VIEW_PX = 256

db, tid = common.db_url(), common.tournament_id()
st.title("Gallery")

found = common.view("gallery_matches", db, tid)
if not found:
    st.info("No match saved sample images (set samples_per_match in the tournament config).")
    st.stop()


def label(m):
    return (f"{common.budget_label(m)} · {m['restorer']} + {m['defense']} · {m['attack']} "
            f"(seed {m['seed']}: {m['adv_psnr']:.2f} dB, {m['clean_psnr'] - m['adv_psnr']:.2f} dB lost)")


def enlarged(path):
    """Small images blown up by whole pixels: the browser would blur them, hiding the noise."""
    with Image.open(path) as img:
        k = max(1, VIEW_PX // max(img.size))
        return img.resize((img.width * k, img.height * k), Image.NEAREST)


c1, c2 = st.columns([3, 1])
# open on the match that did the most damage: the one most worth looking at
hardest = max(range(len(found)), key=lambda i: found[i]["clean_psnr"] - found[i]["adv_psnr"])
match = c1.selectbox("Match", found, index=hardest, format_func=label)
images = common.view("gallery", db, match["id"])
image = c2.selectbox("Image", images, format_func=lambda i: i["image"])

captions = {
    "lq": "UDC input",
    "adv": f"adversarial input (‖δ‖∞ = {image.get('linf', float('nan')) * 255:.2f}/255)",
    "delta": "perturbation, amplified to the full range",
    "restored_clean": f"restored, clean: {image.get('clean_psnr', float('nan')):.2f} dB",
    "restored_adv": f"restored, attacked: {image.get('adv_psnr', float('nan')):.2f} dB",
    "hq": "ground truth",
}
cols = st.columns(len(common.display.SAMPLE_KINDS))
for col, kind in zip(cols, common.display.SAMPLE_KINDS):
    path = image["paths"].get(kind)
    path = common.display.sample_path(path, db) if path else None
    if path and path.is_file():
        col.image(enlarged(path), caption=captions[kind], width="stretch")
    else:
        col.warning(f"{captions[kind]}: file missing ({path or 'not saved'})")

st.caption("PSNR of the defended system's output against the ground truth. The amplified "
           "perturbation maps -ε..ε (ℓ∞) or the largest |δ| (ℓ2) onto black..white.")
st.code(common.display.reproduce_command(match["key"], db), language="bash")
