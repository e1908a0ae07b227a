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
