"""Screenshots of the dashboard for README.md and docs/: leaderboard, gallery, matrix, curves.

    .venv/bin/python scripts/screenshots.py arena-results/arena.db docs/

Starts `arena dashboard` over the database (read-only) and drives headless Chromium through
the DevTools protocol with the browser test's helpers (tests/test_browser.py). Pictures are
saved as palette PNGs to keep docs/ small. Prints each page's load time.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))

from PIL import Image  # noqa: E402

from test_browser import chromium, dashboard_server, find_chromium  # noqa: E402

PAGES = {  # name: (path, ready, height of the shot)
    "leaderboard": ("/", lambda s: s["frames"] >= 2, 1500),
    "gallery": ("/gallery", lambda s: s["images"] >= 6, 1300),
    "matrix": ("/matrix", lambda s: "one per restorer" in s["text"] and s["frames"] >= 1, 1000),
    "curves": ("/curves", lambda s: "PSNR vs attack iterations" in s["text"], 1100),
}


def main(db: str, out: str) -> None:
    out_dir = Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as logs, dashboard_server(db, Path(logs)) as url:
        for name, (path, ready, height) in PAGES.items():
            with chromium(find_chromium(), width=1400, height=height) as browser:
                start = time.monotonic()
                browser.open(url + path, ready, timeout_s=120)
                print(f"{name}: rendered in {time.monotonic() - start - 1.0:.1f} s")
                time.sleep(1.5)  # charts draw after the script finishes
                shot = browser.screenshot(out_dir / f"{name}.png")
            with Image.open(shot) as img:
                small = img.convert("RGB").quantize(colors=128, method=Image.Quantize.MEDIANCUT)
            small.save(shot, optimize=True)
            print(f"  {shot} ({shot.stat().st_size // 1024} KiB)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
