import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import torch
from PIL import Image

from vggnet import build, count_parameters
from vggnet.analysis import compare_kernels, layer_table, table2, totals
from vggnet.cli import main
from vggnet.configs import TABLE1, weight_layers
from vggnet.explain import report_figures, write_report
from vggnet.explain.layers import table1_columns
from vggnet.explain.svg import Svg, block_diagram_svg

SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    # C is not one of the featured D/E, so every figure holds three networks and the appendix is C's.
    out = tmp_path_factory.mktemp("explain")
    return write_report(out, network="C")


@pytest.fixture(scope="module")
def markdown(report):
    return report.read_text(encoding="utf-8")


def meta(name, head="fc"):
    with torch.device("meta"):
        return build(name, head=head)


def tables(markdown):
    """Every Markdown table as (header, rows), cells stripped."""
    found, lines = [], markdown.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("|") and i + 1 < len(lines) and re.fullmatch(r"\|(-{3,}:?\|)+", lines[i + 1]):
            header = [c.strip() for c in line.strip("|").split("|")]
            rows = []
            for row in lines[i + 2 :]:
                if not row.startswith("|"):
                    break
                rows.append([c.strip() for c in row.strip("|").split("|")])
            found.append((header, rows))
    return found


def table_by(markdown, first_header):
    matches = [t for t in tables(markdown) if t[0][0] == first_header]
    assert len(matches) == 1, first_header
    return matches[0]


def captions(markdown):
    return dict((int(n), text) for n, text in re.findall(r"^\*Figure (\d+)\. (.+)\*$", markdown, re.M))


def num(cell):
    return int(cell.replace(",", ""))


def numbers(text):
    """Every number written in `text`: "138,357,544" -> 138357544.0, "74.3%" -> 74.3."""
    return [float(n.replace(",", "")) for n in re.findall(r"\d+(?:,\d{3})*(?:\.\d+)?", text)]


def svg_texts(path):
    root = ET.parse(path).getroot()
    assert root.tag == SVG_NS + "svg"
    return [(t.text, t.get("font-weight")) for t in root.iter(SVG_NS + "text")]


# -- files and captions ------------------------------------------------------------------------


def test_every_figure_exists_with_a_numbered_caption(report, markdown):
    figures = report_figures(report)
    assert figures == [
        "table1.svg",
        "block_C.svg",
        "receptive_field.png",
        "small_kernels.png",
        "params_macs.png",
        "memory.png",
        "heads.png",
        "table2.png",
    ]
    for name in figures:
        assert (report.parent / name).stat().st_size > 1000, name
        if name.endswith(".png"):
            with Image.open(report.parent / name) as im:
                assert im.format == "PNG" and im.width >= 1200, name
    caps = captions(markdown)
    assert sorted(caps) == list(range(1, len(figures) + 1))
    # each image is followed by its caption, in order
    blocks = re.findall(r"!\[[^\]]+\]\(([^)]+)\)\n\n\*Figure (\d+)\.", markdown)
    assert [(f, int(n)) for f, n in blocks] == [(f, i + 1) for i, f in enumerate(figures)]
    assert all(re.search(r"\d", text) for text in caps.values()), "every caption states numbers"


def test_captions_state_the_analysis_numbers(markdown):
    # the numbers each caption must carry, read back from its text; the wording around them is free
    caps = captions(markdown)
    nums = {n: set(numbers(text)) for n, text in caps.items()}
    c, d, e = ({r.name: r for r in layer_table(meta(n), 224)} for n in ("C", "D", "E"))
    d_total = totals(list(d.values()))
    share = 100 * d["fc6"].params / d_total["params"]
    assert 74.0 < share < 74.5  # PAPER.md: FC6 holds about 74% of VGG16
    conv_macs = sum(r.macs for r in d.values() if r.kind == "Conv2d")
    assert conv_macs / d_total["macs"] > 0.99
    assert {d["fc6"].params, d_total["params"], round(share, 1), conv_macs, d_total["macs"]} <= nums[5]
    # receptive fields (px) of the first and last layers, and where E's first exceeds the input
    first_beyond = next(r for r in e.values() if r.rf is not None and r.rf > 224)
    px = {int(v) for v in re.findall(r"(\d+) px", caps[3])}
    assert {d["conv1_1"].rf, d["conv1_2"].rf, c["pool5"].rf, d["pool5"].rf, e["pool5"].rf, first_beyond.rf} <= px
    assert d["pool5"].jump == e["pool5"].jump == 32 and 32 in px and first_beyond.name in caps[3]
    k2, k3 = compare_kernels(2, 512), compare_kernels(3, 512)
    assert {18, 25, 27, 49, k3.stacked_weights, k3.single_weights} <= nums[4]  # 9n vs (2n+1)^2 per C^2
    assert k2.stacked_weights // 512**2 == 18 and k3.single_weights // 512**2 == 49
    # Figure 2 (block diagram of C): its totals and the tensor between blocks, in order
    c_total = totals(list(c.values()))
    assert {c_total["params"], c_total["macs"]} <= nums[2]
    shapes = [tuple(map(int, m)) for m in re.findall(r"(\d+) × (\d+) × (\d+)", caps[2])]
    assert shapes == [(3, 224, 224)] + [r.shape for r in c.values() if r.kind == "MaxPool2d"]
    t2 = table2(configs=TABLE1)
    assert {t2[0].params, t2[-1].params} <= nums[8]
    depths = dict(re.findall(r"\b(A-LRN|[A-E]) (\d+)\b", caps[1]))
    assert {k: int(v) for k, v in depths.items()} == {k: weight_layers(k) for k in TABLE1}


def test_every_large_number_in_the_captions_comes_from_the_analysis(markdown):
    # any integer written with thousands separators must be a count the analysis produced
    known = set()
    for name in ("C", "D", "E"):
        for head in ("fc", "conv", "gap"):
            rows = layer_table(meta(name, head), 224)
            t = totals(rows)
            known |= {r.params for r in rows} | {r.macs for r in rows} | {t["params"], t["macs"]}
            known.add(sum(r.macs for r in rows if r.kind == "Conv2d" and not r.name.startswith("fc")))
    known |= {r.params for r in table2(configs=TABLE1)}
    for n in (1, 2, 3, 4, 5):
        for ch in (64, 128, 256, 512):
            k = compare_kernels(n, ch)
            known |= {k.stacked_weights, k.single_weights}
    written = {num(m) for text in captions(markdown).values() for m in re.findall(r"\d{1,3}(?:,\d{3})+", text)}
    assert written, "captions hold exact counts"
    assert written <= known, sorted(written - known)


# -- tables ----------------------------------------------------------------------------------


def test_table2_equals_analysis(markdown):
    header, rows = table_by(markdown, "config")
    assert header == ["config", "weight layers", "parameters", "millions", "paper (M)", "GMACs", "GFLOPs"]
    expected = table2(configs=TABLE1)
    assert [r[0] for r in rows] == [e.config for e in expected] == list(TABLE1)
    for row, e in zip(rows, expected, strict=True):
        assert num(row[1]) == e.weight_layers
        assert num(row[2]) == e.params
        assert row[3] == f"{e.params / 1e6:.1f}"
        assert num(row[4]) == e.paper_params_m
        assert round(float(row[3])) == e.paper_params_m  # measured rounds to the paper's Table 2
        assert row[5] == f"{e.gmacs:.3f}" and row[6] == f"{2 * e.gmacs:.3f}"
    assert [r[2] for r in rows if r[0] in "ABDE"] == ["132,863,336", "133,047,848", "138,357,544", "143,667,240"]


def test_small_kernel_table_equals_analysis(markdown):
    header, rows = table_by(markdown, "n")
    assert len(header) == 7 and len(rows) == 12
    for row in rows:
        k = compare_kernels(num(row[0]), num(row[1]))
        assert row[2] == f"{k.rf}×{k.rf}"
        assert num(row[3]) == k.stacked_weights == 9 * k.n * k.channels**2
        assert num(row[4]) == k.single_weights == (2 * k.n + 1) ** 2 * k.channels**2
        assert row[5] == f"{k.stacked_weights / k.single_weights:.3f}"
        assert row[6] == f"{k.n} vs 1"


def test_head_table_equals_models(markdown):
    header, rows = table_by(markdown, "network")
    assert [(r[0], r[1]) for r in rows] == [(n, h) for n in ("D", "E", "C") for h in ("fc", "conv", "gap")]
    for row in rows:
        model = meta(row[0], row[1])
        lt = layer_table(model, 224)
        head_rows = [r for r in lt if r.name not in model.feature_names]
        assert num(row[2]) == count_parameters(model) == totals(lt)["params"]
        assert num(row[3]) == count_parameters(model.classifier)
        assert row[4] == f"{100 * count_parameters(model.classifier) / count_parameters(model):.1f}%"
        assert num(row[5]) == totals(lt)["macs"]
        assert num(row[6]) == sum(r.macs for r in head_rows)
    gap = {r[0]: num(r[2]) for r in rows if r[1] == "gap"}
    assert gap["D"] == 15_227_688  # 512*1000 + 1000 head on VGG16's 14,714,688 conv weights


def test_appendix_equals_layer_table(markdown):
    header, rows = table_by(markdown, "layer")
    expected = layer_table(meta("C"), 224)
    assert len(rows) == len(expected) + 1
    for row, e in zip(rows, expected, strict=False):
        assert row[:3] == [e.name, e.kind, "×".join(map(str, e.shape))]
        assert (num(row[3]), num(row[4])) == (e.params, e.macs)
        assert (num(row[5]), num(row[6])) == (e.rf, e.jump)
        assert float(row[7].replace(",", "")) == round(e.memory / 1024, 1)
    t = totals(expected)
    assert rows[-1][0] == "total" and (num(rows[-1][3]), num(rows[-1][4])) == (t["params"], t["macs"])


# -- SVGs ------------------------------------------------------------------------------------


def test_table1_svg_parses_with_every_column_and_layer(report):
    texts = svg_texts(report.parent / "table1.svg")
    words = [t for t, _ in texts]
    for letter in TABLE1:
        assert letter in words
        assert f"{weight_layers(letter)} weight layers" in words
    assert words.count("conv3-64") == 10  # A 1, A-LRN 1, B 2, C 2, D 2, E 2
    assert words.count("maxpool") == 5 and words.count("FC-4096") == 2 and words.count("FC-1000") == 1
    assert words.count("conv1-256") == 1 and words.count("conv1-512") == 2  # C's 1x1 convs
    assert words.count("LRN") == 1 and "soft-max" in words
    assert [224, 224] in [numbers(w) for w in words if w.startswith("input")]  # the input size
    bold = [t for t, w in texts if w == "bold" and t.startswith(("conv", "LRN"))]
    assert sorted(bold) == sorted(
        ["LRN", "conv3-64", "conv3-128", "conv1-256", "conv1-512", "conv1-512"]
        + ["conv3-256", "conv3-512", "conv3-512"] * 2
    )


def test_table1_bold_layers_are_the_papers():
    added = {c.name: [s for b, f in zip(c.blocks, c.added, strict=True) for s, new in zip(b, f, strict=True) if new]
             for c in table1_columns()}  # fmt: skip
    assert added == {
        "A": [],
        "A-LRN": ["LRN"],
        "B": ["conv3-64", "conv3-128"],
        "C": ["conv1-256", "conv1-512", "conv1-512"],
        "D": ["conv3-256", "conv3-512", "conv3-512"],
        "E": ["conv3-256", "conv3-512", "conv3-512"],
    }


def test_block_diagram_svg_shapes_between_blocks(report):
    words = [t for t, _ in svg_texts(report.parent / "block_C.svg")]
    rows = layer_table(meta("C"), 224)
    for r in rows:
        if r.kind == "MaxPool2d":
            c, h, w = r.shape
            assert f"{c} × {h} × {w}" in words, r.name
    assert "3 × 224 × 224" in words and "1000 class scores" in words
    assert words.count("conv1-256 · ReLU") == 1 and words.count("conv1-512 · ReLU") == 2
    assert words.count("maxpool") == 5 and words.count("FC-4096 · ReLU · dropout") == 2
    assert [f"block {i}" for i in range(1, 6)] + ["classifier"] == [
        w for w in words if w.startswith(("block", "classi"))
    ]
    t = totals(rows)
    assert [t["params"], t["macs"], round(t["macs"] / 1e9, 3)] in [numbers(w) for w in words]  # the totals line


def test_svg_text_is_escaped():
    svg = Svg()
    svg.text(0, 0, 'a < b & "c" > d')
    root = ET.fromstring(svg.render(10, 10, "x & y <z>"))
    assert [t.text for t in root.iter(SVG_NS + "text")] == ['a < b & "c" > d']
    assert root.find(SVG_NS + "title").text == "x & y <z>"


# -- command line ----------------------------------------------------------------------------


def test_block_diagram_of_a_lrn_shows_lrn():
    model = meta("vgg11_lrn")
    root = ET.fromstring(block_diagram_svg(model, layer_table(model, 224)))
    words = [t.text for t in root.iter(SVG_NS + "text")]
    assert "LRN" in words and [11, 224, 224] in [numbers(w) for w in words if "A-LRN" in w]  # depth, input size
    assert words.count("conv3-64 · ReLU") == 1 and words.count("maxpool") == 5


DOCS = Path(__file__).resolve().parent.parent / "docs" / "explain"


@pytest.mark.skipif(not DOCS.is_dir(), reason="docs/explain is not in this checkout")
@pytest.mark.slow
def test_cli_regenerates_the_committed_report(tmp_path, capsys):
    assert main(["explain", "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"wrote {tmp_path / 'README.md'} with 8 figures: table1.svg, block_D.svg")
    # the committed copy is what the command writes today (PNG bytes may vary across matplotlib builds)
    for name in ("README.md", "table1.svg", "block_D.svg"):
        assert (tmp_path / name).read_text(encoding="utf-8") == (DOCS / name).read_text(encoding="utf-8"), name
    committed = sorted(p.name for p in DOCS.iterdir() if p.is_file())  # docs/explain/zh/ holds the Chinese report
    assert committed == sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.skipif(not (DOCS / "zh").is_dir(), reason="docs/explain/zh is not in this checkout")
@pytest.mark.slow
def test_cli_regenerates_the_committed_chinese_report_with_chinese_figures(tmp_path, capsys):
    from vggnet.explain.style import installed_fonts
    from vggnet.lang import Strings

    try:
        installed_fonts(Strings("zh", "figures"))
    except ValueError as e:
        pytest.skip(str(e))
    assert main(["explain", "--lang", "zh", "--out", str(tmp_path)]) == 0
    assert capsys.readouterr().out.startswith(f"wrote {tmp_path / 'README.md'} with 8 figures")
    for name in ("README.md", "table1.svg", "block_D.svg"):
        text = (tmp_path / name).read_text(encoding="utf-8")
        assert text == (DOCS / "zh" / name).read_text(encoding="utf-8"), name
    words = [w for w, _ in svg_texts(tmp_path / "block_D.svg")]
    assert [f"卷积块 {i}" for i in range(1, 6)] + ["分类器"] == [
        w for w in words if re.fullmatch(r"卷积块 \d|分类器", w)
    ]
    assert sorted(p.name for p in (DOCS / "zh").iterdir()) == sorted(p.name for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--network", "vgg17"], "unknown VGG configuration 'vgg17'"),
        (["--out", "FILE"], "exists and is not a directory"),
    ],
)
def test_cli_bad_input_exits_2_with_one_line(tmp_path, capsys, args, message):
    file = tmp_path / "file.txt"
    file.write_text("x")
    args = [str(file) if a == "FILE" else a for a in args]
    if "--out" not in args:
        args += ["--out", str(tmp_path / "never")]
    assert main(["explain", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("vggnet explain: error:") and message in err
    assert not (tmp_path / "never").exists()


def test_shallow_variants_table_equals_the_analysis(report):
    header, rows = table_by(report.read_text(), "configuration")
    assert [r[0] for r in rows] == ["B", "B-5x5", "D", "D-7x7"]
    for name, convs, _kernels, params, gmacs, field in rows:
        with torch.device("meta"):
            model = build(name)
        stack = [r for r in layer_table(model, 224) if r.name in model.feature_names]
        conv_rows = [r for r in stack if r.kind == "Conv2d"]
        assert int(convs) == len(conv_rows) and int(params.replace(",", "")) == sum(r.params for r in conv_rows)
        assert float(gmacs) == round(sum(r.macs for r in conv_rows) / 1e9, 3)
        assert int(field) == stack[-1].rf  # pool5
    assert [r[2] for r in rows] == ["3×3", "5×5", "3×3", "5×5, 7×7"]


# -- the report in Chinese ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def both_languages():
    from vggnet.explain import Analysis, report_text

    a = Analysis.of("C")
    return report_text(a, "en"), report_text(a, "zh")


def test_chinese_report_has_the_english_tables_numbers_and_figures(both_languages):
    en, zh = both_languages
    assert re.findall(r"!\[[^\]]*\]\(([^)]+)\)", zh) == re.findall(r"!\[[^\]]*\]\(([^)]+)\)", en)
    en_tables, zh_tables = tables(en), tables(zh)
    assert len(zh_tables) == len(en_tables) == 5
    for (en_head, en_rows), (zh_head, zh_rows) in zip(en_tables, zh_tables, strict=True):
        assert len(zh_head) == len(en_head) and zh_head != en_head  # translated headers, same columns
        for en_row, zh_row in zip(en_rows, zh_rows, strict=True):
            assert numbers(" ".join(zh_row)) == numbers(" ".join(en_row))
    en_captions = captions(en)
    zh_captions = dict((int(n), t) for n, t in re.findall(r"^\*图 (\d+)：(.+)\*$", zh, re.M))
    assert sorted(zh_captions) == sorted(en_captions) == list(range(1, 9))
    for n, text in en_captions.items():  # the same numbers, in the order Chinese puts them
        assert sorted(numbers(zh_captions[n])) == sorted(numbers(text)), n


def test_chinese_report_prose_is_chinese_with_the_papers_terms(both_languages):
    _, zh = both_languages
    prose = re.sub(r"`[^`]*`|\*Very Deep[^*]*\*|!\[[^\]]*\]\([^)]*\)|\([^)]*\.md\)", "", zh)
    english = re.findall(r"\b(?:the|and|of|with|per|each|layers?)\b", prose)
    assert english == [], english[:10]
    for term in ("卷积层", "感受野", "全连接层", "参数量", "计算量", "最大池化", "跳距"):
        assert term in zh, term
    assert "[experiments/claims](../../../experiments/claims/RESULTS.md)" in zh  # from docs/explain/zh
    assert "`vggnet explain --lang zh --out docs/explain/zh`" in zh


def test_terms_are_translated_the_same_way_everywhere():
    """Wherever an English string uses a glossary term, its translation uses the term's translation."""
    from vggnet.lang import languages, strings

    for lang in languages():
        terms = strings(lang, "terms")
        for section in ("view", "explain", "figures"):
            en, other = strings("en", section), strings(lang, section)
            for key, text in en.items():
                if not isinstance(text, str):  # a font list
                    continue
                for term, translated in terms.items():
                    words = re.sub(r"\{[a-z_0-9]+\}", "", text)  # words, not placeholders
                    if re.search(r"\b" + re.escape(term) + r"(?:s|ies|y)?\b", words):
                        assert translated in other[key], (lang, section, key, term)
