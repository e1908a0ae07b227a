"""Regenerate docs/view.png and docs/view_zh.png: the viewer of a trained net on photos, drawn by headless Chromium.

The docs' pictures (docs/view.md says which net and photos):

    IN=/work/shared/data/imagenette/val   # Imagenette's validation photos; any photos will do
    PYTHONPATH=src python scripts/view_screenshots.py runs/claims/D-s3 \\
        $IN/n03028079/<photo>.JPEG $IN/n03394916/<photo>.JPEG --out docs

Writes the page in every language (`vggnet view --lang`), selects conv3_1 in the diagram, turns the Grad-CAM
overlay on at its default strength, picks a unit of the second feature map and saves a 960-px-wide copy of a
1280 x 1900 window as OUT/view.png (English) and OUT/view_<lang>.png. Needs selenium, Debian's chromium and
chromium-driver, and for Chinese a CJK font (fonts-noto-cjk).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from PIL import Image

from vggnet.lang import DEFAULT, languages
from vggnet.view import write_view

FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
    "--disable-component-update --disable-sync --hide-scrollbars"
).split()
WINDOW = (1280, 1900)  # the diagram, a photo with its overlay and receptive field, the maps
WIDTH = 960  # of the copy in docs/


def chromium(profile: str):
    """A headless Chromium driven through Debian's chromedriver (nothing downloaded)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        raise SystemExit("needs chromium and chromedriver on PATH (Debian: apt-get install chromium chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in [*FLAGS, f"--user-data-dir={profile}", f"--window-size={WINDOW[0]},{WINDOW[1]}"]:
        options.add_argument(flag)
    return webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)


def screenshot(driver, page: Path, out: Path) -> None:
    """The page with conv3_1 selected, the overlay on and a unit picked, saved small."""
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    driver.set_window_size(*WINDOW)
    driver.get(page.as_uri())
    driver.find_element(By.CSS_SELECTOR, '#diagram .layer[data-name="conv3_1"]').click()
    driver.find_element(By.ID, "cam-show").click()
    img = driver.find_elements(By.CSS_SELECTOR, "#maps img")[1]
    ActionChains(driver).move_to_element_with_offset(img, -10, -20).click().perform()
    driver.execute_script("window.scrollTo(0, 0)")
    with tempfile.TemporaryDirectory() as tmp:
        shot = Path(tmp) / "shot.png"
        driver.save_screenshot(str(shot))
        image = Image.open(shot).convert("RGB")
    image = image.resize((WIDTH, round(image.height * WIDTH / image.width)), Image.LANCZOS)
    image.quantize(colors=128).save(out, optimize=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("weights", help="a run folder or weights file")
    parser.add_argument("photos", nargs="+")
    parser.add_argument("--out", default="docs", help="folder for view.png and view_<lang>.png (default: docs)")
    args = parser.parse_args()
    weights = Path(args.weights)
    weights = weights / "model.safetensors" if weights.is_dir() else weights
    profile = tempfile.mkdtemp(prefix="vggnet-chromium-")
    driver = chromium(profile)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for lang in languages():
                page = write_view(Path(tmp) / f"view_{lang}.html", weights=weights, images=args.photos, lang=lang)
                out = Path(args.out) / ("view.png" if lang == DEFAULT else f"view_{lang}.png")
                screenshot(driver, page, out)
                print(f"wrote {out}")
    finally:
        driver.quit()
        shutil.rmtree(profile, ignore_errors=True)


if __name__ == "__main__":
    main()
