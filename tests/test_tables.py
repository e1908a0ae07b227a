"""vggnet.tables: Markdown tables as the reports write them."""

from vggnet.tables import markdown_table


def test_markdown_table_aligns_columns_and_leaves_none_blank() -> None:
    table = markdown_table(["net", "top-1", "note"], [["A", 29.6, None], ["D", 27.0, ""]], align="lrc")
    assert table.splitlines() == ["| net | top-1 | note |", "|---|---:|:---:|", "| A | 29.6 | |", "| D | 27.0 |  |"]
    assert markdown_table(["a", "b"], []).splitlines()[1] == "|---|---|"


def test_per_class_table_marks_a_class_without_images() -> None:
    from vggnet.tables import per_class_table

    text = per_class_table(["ants", "bees"], [87.25, None])
    assert text.splitlines()[2:] == ["| ants | 87.2 |", "| bees | - |"]


def gfm_cells(row: str) -> list[str]:
    """A table row split as GitHub's Markdown does: on pipes not escaped by a backslash."""
    import re

    return [c.strip() for c in re.split(r"(?<!\\)\|", row.strip())[1:-1]]


def test_cells_carrying_user_strings_cannot_add_columns_or_rows() -> None:
    from vggnet.tables import per_class_table

    names = ["a|b", "line\nbreak", "cr\r\nlf", "ends with \\", "c\\|d"]
    lines = per_class_table(names, [50.0] * 5).splitlines()
    assert len(lines) == 2 + 5  # header, rule, one row per class: no line break got through
    assert [len(gfm_cells(line)) for line in lines] == [2] * 7  # no pipe added a column
    assert [gfm_cells(line)[0] for line in lines[2:]] == [
        "a\\|b", "line break", "cr  lf", "ends with \\\\", "c\\\\\\|d"
    ]  # fmt: skip


def test_a_class_folder_named_with_a_pipe_keeps_the_report_table_whole(tmp_path) -> None:
    import torch
    from PIL import Image

    from vggnet import build
    from vggnet.configs import EvalConfig
    from vggnet.evaluate import evaluate, save_result
    from vggnet.weights import save_weights

    for c, name in enumerate(["a|b", "c"]):
        (tmp_path / "data" / name).mkdir(parents=True)
        Image.new("RGB", (40, 40), (60 * c, 90, 30)).save(tmp_path / "data" / name / "0.png")
    torch.manual_seed(0)
    save_weights(
        build("A", width=1 / 16, num_classes=2, input_size=32), tmp_path / "w.safetensors", extra={"scale": 32}
    )
    result = evaluate([tmp_path / "w.safetensors"], str(tmp_path / "data"), EvalConfig(flip=False), progress=False)
    report = next(p for p in save_result(result, tmp_path / "out") if p.suffix == ".md").read_text()
    rows = [line for line in report.splitlines() if line.startswith("| a")]
    assert rows == [f"| a\\|b | {result.per_class_accuracy[0]:.1f} |"] and len(gfm_cells(rows[0])) == 2
