"""vggnet.tables: Markdown tables as the reports write them."""

from vggnet.tables import markdown_table


def test_markdown_table_aligns_columns_and_leaves_none_blank() -> None:
    table = markdown_table(["net", "top-1", "note"], [["A", 29.6, None], ["D", 27.0, ""]], align="lrc")
    assert table.splitlines() == ["| net | top-1 | note |", "|---|---:|:---:|", "| A | 29.6 | |", "| D | 27.0 |  |"]
    assert markdown_table(["a", "b"], []).splitlines()[1] == "|---|---|"
