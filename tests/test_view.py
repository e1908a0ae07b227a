"""The viewer page: its numbers, its pictures, bad input, and (where Chromium is installed) the page in a browser."""

import base64
import io
import json
import re
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageOps
from torch import nn

from vggnet import build
from vggnet.analysis import compare_kernels, layer_table, totals
from vggnet.cli import main
from vggnet.configs import CONFIGS, HEADS
from vggnet.features import features_at
from vggnet.view import render, view_data, write_view
from vggnet.view.page import MAP_SIDE, TOP_MAPS, layer_records
from vggnet.weights import Preprocessing, load_weights, save_weights

W = 1 / 16
FIELDS = ("name", "kind", "params", "macs", "rf", "jump", "memory")


def embedded(html: str) -> dict:
    """The JSON the page carries."""
    match = re.search(r'<script type="application/json" id="vggnet-data">(.*?)</script>', html, re.S)
    return json.loads(match.group(1))


def decode(uri: str) -> Image.Image:
    head, b64 = uri.split(",", 1)
    assert head in ("data:image/png;base64", "data:image/jpeg;base64")
    return Image.open(io.BytesIO(base64.b64decode(b64)))


@pytest.fixture(scope="module")
def photos(tmp_path_factory) -> list[Path]:
    """A landscape JPEG (scikit-image's cat) and a portrait PNG with a red square."""
    from skimage import data

    folder = tmp_path_factory.mktemp("photos")
    cat = folder / "cat.jpg"
    Image.fromarray(data.chelsea()).save(cat)  # 451 x 300
    square = np.full((320, 240, 3), 200, np.uint8)
    square[100:160, 60:120] = (220, 30, 30)
    portrait = folder / "red square.png"
    Image.fromarray(square).save(portrait)
    return [cat, portrait]


@pytest.fixture(scope="module")
def tiny(tmp_path_factory) -> Path:
    """A 1/16-width VGG16 with three named classes, in the project format."""
    torch.manual_seed(0)
    model = build("D", width=W, num_classes=3).eval()
    path = tmp_path_factory.mktemp("weights") / "tiny.safetensors"
    save_weights(model, path, class_names=["cat", "square", "neither"], preprocessing=Preprocessing.torchvision())
    return path


@pytest.fixture(scope="module")
def page(tiny, photos, tmp_path_factory) -> Path:
    return write_view(tmp_path_factory.mktemp("page") / "view.html", weights=tiny, images=photos)


# -- the numbers ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("head", HEADS)
@pytest.mark.parametrize("bn", [False, True])
@pytest.mark.parametrize("letter", list(CONFIGS))
def test_every_configuration_carries_layer_tables_numbers(letter, bn, head):
    html = render(view_data(letter, batch_norm=bn, head=head))
    data = embedded(html)
    with torch.device("meta"):
        rows = layer_table(build(letter, batch_norm=bn, head=head), 224)
    assert [{k: r[k] for k in FIELDS} for r in data["layers"]] == [{k: getattr(r, k) for k in FIELDS} for r in rows]
    assert [tuple(r["shape"]) for r in data["layers"]] == [r.shape for r in rows]
    assert data["totals"] == totals(rows)
    assert data["network"]["weight_layers"] == sum(r.kind in ("Conv2d", "Linear") for r in rows)


def test_labels_blocks_and_the_header_follow_the_paper():
    data = view_data("vgg16_c", head="conv")  # configuration C by its alias
    layers = {r["name"]: r for r in data["layers"]}
    assert data["network"]["name"] == "C" and data["network"]["alias"] == "vgg16_c"
    assert layers["conv3_3"]["label"] == "conv1-256" and layers["conv1_1"]["label"] == "conv3-64"
    assert layers["fc6"]["label"] == "FC-4096 as a 7x7 conv" and layers["fc8"]["label"] == "FC-1000 as a 1x1 conv"
    blocks = [layers[n]["block"] for n in ("conv1_1", "relu2_2", "pool5", "fc6", "relu7")]
    assert blocks == ["1", "2", "5", "head", "head"]
    assert view_data("E", batch_norm=True)["network"]["alias"] == "vgg19_bn"
    assert "<title>VGG E_bn</title>" in render(view_data("E", batch_norm=True))


@pytest.mark.parametrize("config", ["C", "E_bn"])
def test_receptive_field_offsets_are_exact(config):
    """Unit (i, j) sees input rows first + i*jump ... + rf - 1: checked against the pixels its gradient reaches."""
    model = build(config, width=W).eval()
    side = 64
    records = {r["name"]: r for r in layer_records(model, layer_table(model, side))}
    for i, m in enumerate(model.features):
        if isinstance(m, nn.MaxPool2d):
            model.features[i] = nn.AvgPool2d(2, 2)  # the same geometry, and every input pixel gets a gradient
        elif isinstance(m, nn.Conv2d):
            nn.init.constant_(m.weight, 1 / m.weight[0].numel())  # positive: no ReLU is off, nothing cancels
    for name in ("conv1_1", "conv2_2", "pool2", "conv3_3", "conv4_1", "pool5"):
        layer = model.feature_names.index(name)
        rec = records[name]
        _, h, w = rec["shape"]
        for i, j in ((0, w - 1), (h // 2, w // 3)):
            x = torch.ones(1, 3, side, side, requires_grad=True)
            model.features[: layer + 1](x)[0, 0, i, j].backward()
            rows = x.grad[0].sum(0).sum(1).nonzero().flatten()
            cols = x.grad[0].sum(0).sum(0).nonzero().flatten()
            y0, x0 = rec["first"] + i * rec["jump"], rec["first"] + j * rec["jump"]
            expected_rows = (max(0, y0), min(side, y0 + rec["rf"]) - 1)
            expected_cols = (max(0, x0), min(side, x0 + rec["rf"]) - 1)
            assert (rows.min().item(), rows.max().item()) == expected_rows, (name, i, j)
            assert (cols.min().item(), cols.max().item()) == expected_cols, (name, i, j)


# -- the photos ------------------------------------------------------------------------------------------


def test_photos_carry_top5_strongest_maps_and_grad_cam(tiny, photos, page):
    data = embedded(page.read_text(encoding="utf-8"))
    model, meta = load_weights(tiny)
    assert [p["name"] for p in data["photos"]] == ["cat.jpg", "red square.png"]
    for p, path in zip(data["photos"], photos, strict=True):
        crop = decode(p["src"])
        assert crop.size == (224, 224) and p["size"] == list(Image.open(path).size)
        # the top classes are the model's on the centre crop the page shows (JPEG-compressed there)
        x = torch.from_numpy(np.array(ImageOps.fit(Image.open(path).convert("RGB"), (224, 224), Image.BILINEAR)))
        x = x.permute(2, 0, 1)[None].float() / 255
        with torch.no_grad():
            probs = model(meta.preprocessing(x)).softmax(1)[0]
            acts = features_at(model, x, ["relu1_1", "relu3_2", "relu5_3"], meta.preprocessing)
        names = ["cat", "square", "neither"]
        assert [t["label"] for t in p["top"]] == [names[c] for c in probs.argsort(descending=True).tolist()]
        assert [t["p"] for t in p["top"]] == pytest.approx(probs.sort(descending=True).values.tolist(), abs=1e-6)
        convs = [n for n in model.feature_names if n.startswith("conv")]
        assert list(p["maps"]) == convs and list(p["gradcam"]) == convs and p["cam"] is None
        for relu in ("relu1_1", "relu3_2", "relu5_3"):
            maps = p["maps"]["conv" + relu[4:]]
            means = acts[relu][0].mean(dim=(1, 2))
            assert [m["channel"] for m in maps] == means.topk(min(TOP_MAPS, len(means))).indices.tolist()
            side = acts[relu].shape[-1]
            assert decode(maps[0]["src"]).size == (min(side, MAP_SIDE),) * 2 and decode(maps[0]["src"]).mode == "L"
            assert len(p["gradcam"]["conv" + relu[4:]]) == 3  # one per class: fewer than five here
            assert decode(p["gradcam"]["conv" + relu[4:]][0]).size == (side, side)


def test_page_is_one_self_contained_file_of_bounded_size(page, tiny):
    html = page.read_text(encoding="utf-8")
    assert "http://" not in html and "https://" not in html
    assert not re.search(r"<(script|img|link|iframe)\b[^>]*\b(src|href)=\"(?!data:)", html)
    assert "@import" not in html and "url(" not in html
    convs = [m for m in load_weights(tiny)[0].features if isinstance(m, nn.Conv2d)]
    per_photo = sum(min(TOP_MAPS, m.out_channels) + 3 for m in convs)  # maps (conv1: 4) + a CAM a class
    assert html.count("data:image/png;base64,") == 2 * per_photo
    # the pictures' count and sides do not depend on the width, so VGG16's page is about this size too
    assert page.stat().st_size < 10e6


def test_gap_head_adds_cam_and_features_only_weights_show_no_classes(tmp_path, photos):
    gap = build("A", width=W, num_classes=2, head="gap").eval()
    save_weights(gap, tmp_path / "gap.safetensors")
    data = view_data(weights=tmp_path / "gap.safetensors", images=photos[:1])
    assert len(data["photos"][0]["cam"]) == 2 and decode(data["photos"][0]["cam"][0]).size == (7, 7)
    assert [t["label"] for t in data["photos"][0]["top"]] in (["class 0", "class 1"], ["class 1", "class 0"])


def test_wordnet_ids_are_shown_with_their_imagenet_names():
    from vggnet.view.page import readable_names

    assert readable_names(["n03028079", "n03888257"]) == ["church (n03028079)", "parachute (n03888257)"]
    assert readable_names(["cat", "n03028079"]) == ["cat", "n03028079"]  # not all wnids: the names as they are


# -- bad input: one line, exit 2, nothing written --------------------------------------------------------


@pytest.fixture
def bad_inputs(tmp_path, tiny, photos):
    text = tmp_path / "notes.jpg"
    text.write_text("not a photo")
    garbage = tmp_path / "broken.pth"
    garbage.write_bytes(b"\x80\x02 this is no checkpoint")
    return {
        "unreadable photo": (["--weights", str(tiny), str(text)], "unreadable image"),
        "missing photo": (["--weights", str(tiny), str(tmp_path / "nowhere.jpg")], "no such image"),
        "other architecture": (["--network", "E", "--weights", str(tiny)], "holds VGG D, not the E asked for"),
        "other head": (["--head", "gap", "--weights", str(tiny)], "the fc head, not the gap head asked for"),
        "broken weights": (["--weights", str(garbage)], "broken.pth"),
        "unknown network": (["--network", "vgg17"], "unknown VGG configuration 'vgg17'"),
        "photos without weights": ([str(photos[0])], "photos need weights (--weights)"),
        "unknown language": (["--lang", "fr"], "--lang 'fr': accepted en, zh"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "unreadable photo",
        "missing photo",
        "other architecture",
        "other head",
        "broken weights",
        "unknown network",
        "photos without weights",
        "unknown language",
    ],
)
def test_bad_input_is_one_line_exit_2_and_nothing_written(case, bad_inputs, tmp_path, capsys):
    args, message = bad_inputs[case]
    out = tmp_path / "out" / "view.html"
    assert main(["view", *args, "--out", str(out)]) == 2
    captured = capsys.readouterr()
    err = captured.err.strip()
    assert err.count("\n") == 0 and message in err and err.startswith("vggnet view: error: ")
    assert not out.exists() and not captured.out


def test_cli_writes_the_page(tmp_path, capsys):
    out = tmp_path / "view.html"
    assert main(["view", "--network", "B", "--bn", "--head", "conv", "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {out} (")
    data = embedded(out.read_text(encoding="utf-8"))
    assert data["network"]["name"] == "B_bn" and data["network"]["head"] == "conv" and data["photos"] == []


# -- in a real browser ----------------------------------------------------------------------------------

CHROMIUM_FLAGS = (
    "--headless --no-sandbox --disable-gpu --disable-quic --no-first-run --disable-background-networking "
    "--disable-component-update --disable-sync"
).split()


def _browser_missing() -> str | None:
    try:
        import selenium  # noqa: F401
    except ImportError:
        return "selenium is not installed (pip install 'vggnet[test]')"
    if not (shutil.which("chromium") and shutil.which("chromedriver")):
        return "no chromium/chromedriver on PATH (Debian: apt-get install chromium chromium-driver)"
    return None


@pytest.fixture(scope="module")
def browser():
    reason = _browser_missing()
    if reason:
        pytest.skip(reason)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    profile = tempfile.mkdtemp(prefix="vggnet-chromium-")
    for flag in [*CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1280,1000"]:
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(shutil.which("chromedriver")), options=options)  # nothing downloaded
    yield driver
    driver.quit()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def loaded(browser, page):
    browser.set_window_size(1280, 1000)
    browser.get(page.as_uri())
    browser.get_log("browser")  # start each test with an empty console
    return browser


def _by(driver, css):
    from selenium.webdriver.common.by import By

    return driver.find_elements(By.CSS_SELECTOR, css)


def test_browser_loads_the_page_without_console_errors_or_requests(browser, page):
    browser.get(page.as_uri())
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "WARNING")]
    assert errors == []
    fetched = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
    assert all(name.startswith("data:") for name in fetched)
    assert len(_by(browser, "#diagram .layer")) == len(embedded(page.read_text(encoding="utf-8"))["layers"])
    assert not browser.find_element("id", "photos").get_attribute("hidden")


def test_browser_clicking_a_layer_shows_layer_tables_numbers(loaded, tiny):
    from selenium.webdriver.common.keys import Keys

    model, _ = load_weights(tiny)
    rows = layer_table(model, 224)
    t = totals(rows)
    shown = "return [...document.querySelectorAll('#details [data-field]')].map(e => [e.dataset.field, e.dataset.value, e.textContent])"
    nodes = _by(loaded, "#diagram .layer")
    for node, r in zip(nodes, rows, strict=True):
        node.click()
        field = {key: (value, text) for key, value, text in loaded.execute_script(shown)}
        assert field["name"][1] == r.name and node.get_attribute("aria-pressed") == "true"
        assert field["shape"][1] == " × ".join(map(str, r.shape))
        for key in ("params", "macs", "memory", "rf", "jump"):
            value = getattr(r, key)
            assert field[key][0] == (None if value is None else str(value)), key
        assert field["params"][1].startswith(f"{r.params:,} (") and f"of {t['params']:,})" in field["params"][1]
        assert field["macs"][1].startswith(f"{r.macs:,} (") and f"of {t['macs']:,})" in field["macs"][1]
        assert field["rf"][1] == f"{r.rf} × {r.rf} px"
    nodes[0].send_keys(Keys.ENTER)  # the keyboard reaches every layer too
    assert nodes[0].get_attribute("aria-pressed") == "true" and nodes[0].get_attribute("tabindex") == "0"
    assert nodes[0].get_attribute("role") == "button" and "conv1_1" in nodes[0].get_attribute("aria-label")


def test_browser_clicking_a_feature_map_draws_the_receptive_field(loaded):
    from selenium.webdriver.common.action_chains import ActionChains

    _by(loaded, '#diagram .layer[data-name="conv3_1"]')[0].click()  # the diagram picks the maps' layer
    assert loaded.find_element("id", "map-layer").get_attribute("value") == "conv3_1"
    img = _by(loaded, "#maps img")[0]
    photo = loaded.find_element("id", "photo")
    box = loaded.find_element("id", "rf")
    size = img.size["width"]
    # conv3_1 of VGG16: 56 x 56 units, field 24 px, jump 4; unit 0's field starts at pixel -10 (three paddings)
    for (fy, fx), (i, j) in (((0.25, 0.5), (14, 28)), ((0.02, 0.02), (1, 1))):
        offset = round((fx - 0.5) * size), round((fy - 0.5) * size)  # from the map's centre
        ActionChains(loaded).move_to_element_with_offset(img, *offset).click().perform()
        unit = {k: int(box.get_attribute(f"data-{k}")) for k in ("i", "j", "y0", "x0", "y1", "x1")}
        assert abs(unit["i"] - i) <= 1 and abs(unit["j"] - j) <= 1  # a 2-px unit under a click rounded to a pixel
        y0, x0 = -10 + 4 * unit["i"], -10 + 4 * unit["j"]
        assert unit == {**unit, "y0": y0, "x0": x0, "y1": y0 + 24, "x1": x0 + 24}
        clipped = (min(224, x0 + 24) - max(0, x0), min(224, y0 + 24) - max(0, y0))
        scale = photo.size["width"] / 224
        assert box.size["width"] == pytest.approx(clipped[0] * scale, abs=1.5)
        assert box.size["height"] == pytest.approx(clipped[1] * scale, abs=1.5)
        assert box.get_attribute("data-clipped") == str(clipped != (24, 24)).lower()
    assert "Clipped to the 224×224 image" in loaded.find_element("id", "rf-text").text
    assert all(m.get_attribute("alt").startswith("conv3_1 channel ") for m in _by(loaded, "#maps img"))


def test_browser_kernel_argument_equals_compare_kernels(loaded):
    n_input, c_input = loaded.find_element("id", "k-n"), loaded.find_element("id", "k-c")
    for n, c in ((1, 64), (2, 512), (3, 512), (7, 4096)):
        for element, value in ((n_input, n), (c_input, c)):
            element.clear()
            element.send_keys(str(value))
        k = compare_kernels(n, c)
        cells = {key: int(loaded.find_element("id", f"k-{key}").get_attribute("data-value")) for key in (
            "rf-stacked", "rf-single", "w-stacked", "w-single", "relu-stacked", "relu-single")}  # fmt: skip
        assert cells == {
            "rf-stacked": k.rf, "rf-single": k.rf, "w-stacked": k.stacked_weights,
            "w-single": k.single_weights, "relu-stacked": k.stacked_relus, "relu-single": k.single_relus,
        }  # fmt: skip


def test_browser_phone_layout_has_no_sideways_scrolling(loaded):
    loaded.set_window_size(390, 844)  # a phone
    inner, scroll, client = loaded.execute_script(
        "const d = document.documentElement; return [window.innerWidth, d.scrollWidth, d.clientWidth]"
    )
    assert inner <= 400 and scroll <= client


def test_browser_overlay_is_off_by_default_and_the_protocol_is_named(loaded):
    """Issue 36: the photo is not hidden under the class evidence, and the top-5 says what produced it."""
    overlay = loaded.find_element("id", "overlay")
    assert overlay.get_attribute("hidden") is not None and not overlay.is_displayed()
    assert loaded.find_element("id", "protocol").text.startswith("Probabilities from one 224×224 centre crop")
    key = loaded.find_element("id", "cam-key")
    assert not key.is_displayed()
    loaded.find_element("id", "cam-show").click()
    assert overlay.is_displayed() and float(overlay.value_of_css_property("opacity")) == pytest.approx(0.5)
    # the overlay's legend: which map, which class, and the colour scale from none to most
    label = loaded.find_element("id", "cam-class").get_property("selectedOptions")[0].text.split(". ", 1)[1]
    assert key.is_displayed() and key.text == f"Grad-CAM at conv5_3 for “{label}”: nonemost"
    assert key.find_element("class name", "cam-key-bar").size["width"] > 50
    strength = loaded.find_element("id", "cam-strength")
    loaded.execute_script("arguments[0].value = 20; arguments[0].dispatchEvent(new Event('input'))", strength)
    assert float(overlay.value_of_css_property("opacity")) == pytest.approx(0.2)


# -- the page in Chinese ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def page_zh(tiny, photos, tmp_path_factory) -> Path:
    return write_view(tmp_path_factory.mktemp("page_zh") / "view.html", weights=tiny, images=photos, lang="zh")


def test_chinese_page_carries_the_same_numbers_and_translated_text(page, page_zh):
    en, zh = page.read_text(encoding="utf-8"), page_zh.read_text(encoding="utf-8")
    data_en, data_zh = embedded(en), embedded(zh)
    numbers = ("name", "kind", "shape", "params", "macs", "rf", "jump", "first", "memory")
    assert [{k: r[k] for k in numbers} for r in data_zh["layers"]] == [
        {k: r[k] for k in numbers} for r in data_en["layers"]
    ]
    assert data_zh["totals"] == data_en["totals"] and data_zh["photos"] == data_en["photos"]
    labels = {r["name"]: r["label"] for r in data_zh["layers"]}
    assert labels["pool1"] == "最大池化 2x2，步长 2" and labels["conv1_1"] == "conv3-4" and labels["fc6"] == "FC-256"
    assert '<html lang="zh-CN">' in zh and '<h2 id="network-heading">逐层看网络</h2>' in zh
    assert "{{" not in zh and "{{" not in en  # every static string filled in
    assert "<title>VGG D (width 1/16)</title>" in en and "<title>VGG D（宽度 1/16）</title>" in zh


def _cjk_installed() -> bool:
    import subprocess

    fc_list = shutil.which("fc-list")
    return bool(fc_list) and "Noto Sans CJK SC" in subprocess.run([fc_list], capture_output=True, text=True).stdout


# Characters of the page's text (text nodes, by the font of the element they sit in) that no installed font
# draws: rendered on a canvas, such a character gives the same pixels as a code point no font has.
MISSING_GLYPHS = r"""
const reference = "\u{10FFFD}";  // a private-use code point: no font draws it
const canvas = document.createElement("canvas"); canvas.width = canvas.height = 48;
const g = canvas.getContext("2d");
const draw = (font, s) => { g.clearRect(0, 0, 48, 48); g.font = font; g.fillText(s, 4, 36); return g.getImageData(0, 0, 48, 48).data.join(); };
const missing = (font, ch) => draw(font, ch) === draw(font, reference);
const extra = arguments[0] || [];
const seen = new Map();
const walker = document.createTreeWalker(document.body, NodeFilter.SHOW_TEXT);
for (let n = walker.nextNode(); n; n = walker.nextNode()) {
  const style = getComputedStyle(n.parentElement);
  const font = `${style.fontStyle} ${style.fontWeight} 24px ${style.fontFamily}`;
  for (const ch of n.textContent) if (ch.codePointAt(0) > 127) seen.set(font + "\u0000" + ch, [font, ch]);
}
const font = `24px ${getComputedStyle(document.body).fontFamily}`;
for (const ch of extra) seen.set(font + "\u0000" + ch, [font, ch]);
const chars = [...seen.values()];
return [chars.length, chars.filter(([f, ch]) => missing(f, ch)).map(([, ch]) => ch)];
"""


@pytest.fixture
def loaded_zh(browser, page_zh):
    if not _cjk_installed():
        pytest.skip("no Noto Sans CJK SC font (Debian: apt-get install fonts-noto-cjk)")
    browser.set_window_size(1280, 1000)
    browser.get(page_zh.as_uri())
    return browser


def test_browser_chinese_page_has_no_console_error_and_no_missing_glyph(loaded_zh):
    assert [e for e in loaded_zh.get_log("browser") if e["level"] in ("SEVERE", "WARNING")] == []
    _by(loaded_zh, '#diagram .layer[data-name="conv3_1"]')[0].click()
    _by(loaded_zh, "#maps img")[0].click()  # the receptive-field text too
    count, missing = loaded_zh.execute_script(
        MISSING_GLYPHS, ["\U0010fffc", "卷"]
    )  # a known-missing one, a known-present one
    assert count > 200  # the page's Chinese characters were looked at (241 distinct with their fonts when written)
    assert missing == ["\U0010fffc"]  # the check finds a missing glyph, and the page has none
    # and the headings are drawn by the CJK font the stylesheet names first for Chinese
    loaded_zh.execute_cdp_cmd("DOM.enable", {})
    loaded_zh.execute_cdp_cmd("CSS.enable", {})
    root = loaded_zh.execute_cdp_cmd("DOM.getDocument", {"depth": 1})["root"]["nodeId"]
    node = loaded_zh.execute_cdp_cmd("DOM.querySelector", {"nodeId": root, "selector": "#network-heading"})["nodeId"]
    fonts = loaded_zh.execute_cdp_cmd("CSS.getPlatformFontsForNode", {"nodeId": node})["fonts"]
    assert [f["familyName"] for f in fonts] == ["Noto Sans CJK SC"]


def test_browser_chinese_layer_panel_shows_the_english_pages_numbers(browser, page, page_zh):
    """Each layer's panel: the same data values, and the same numbers in its text, in either language."""
    shown = "return [...document.querySelectorAll('#details [data-field]')].map(e => [e.dataset.field, e.dataset.value, e.textContent])"

    def panels(path: Path) -> list[dict]:
        browser.get(path.as_uri())
        out = []
        for node in _by(browser, "#diagram .layer"):
            node.click()
            out.append(
                {
                    key: (value, sorted(re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?", text)))
                    for key, value, text in browser.execute_script(shown)
                }
            )
        return out

    en, zh = panels(page), panels(page_zh)
    assert len(en) == len(zh) == len(embedded(page.read_text(encoding="utf-8"))["layers"]) and en == zh
    assert browser.find_element("id", "details").text.count("参数量") == 1  # the Chinese panel is in Chinese
