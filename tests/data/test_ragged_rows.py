"""A row with more or fewer fields than its file's header (or layout) is an error at FILE:LINE.

pandas silently shifts a row that has one field more than the names it is given (the first
field becomes the index), so ``2<TAB>x<TAB>z`` under ``item_id entity_id`` was read as item ``x``
-> entity ``z``. Every layout is checked here, at the start, middle and end of a file.
"""

from __future__ import annotations

import gzip

import pytest

from simkgcl.cli import main
from simkgcl.data import load_dataset
from simkgcl.errors import InputError

INTER = "user_id:token\titem_id:token\n1\t1\n1\t2\n2\t3\n"
KG = "head_id:token\trelation_id:token\ttail_id:token\nx\tr\ty\nz\tr\ty\nw\tr\ty\n"
LINK = "item_id:token\tentity_id:token\n1\tx\n2\tz\n3\tw\n"


def _atomic(folder_of, root, **replace):
    files = {"a.inter": INTER, "a.kg": KG, "a.link": LINK}
    files.update({f"a.{ext}": text for ext, text in replace.items()})
    return folder_of(root / "a", files)


def _error(path) -> str:
    with pytest.raises(InputError) as info:
        load_dataset(path)
    return str(info.value)


def test_the_issue_row_is_refused_not_shifted(tmp_path, folder_of) -> None:
    folder = _atomic(folder_of, tmp_path, link="item_id:token\tentity_id:token\n2\tx\tz\n")
    assert _error(folder) == (
        f"{folder / 'a.link'}:2: expected 2 tab-separated fields as in the header "
        "(item_id:token entity_id:token), found 3: '2\\tx\\tz'"
    )


@pytest.mark.parametrize("where", [0, 1, 2])  # first, middle, last data row
@pytest.mark.parametrize(
    ("ext", "header", "rows", "bad_row", "found"),
    [
        ("link", "item_id:token\tentity_id:token", ["1\tx", "2\tz", "3\tw"], "2\tz\textra", 3),
        ("link", "item_id:token\tentity_id:token", ["1\tx", "2\tz", "3\tw"], "2", 1),
        ("link", "item_id:token\tentity_id:token", ["1\tx", "2\tz", "3\tw"], "2\tz\t", 3),
        ("kg", "head_id:token\trelation_id:token\ttail_id:token", ["x\tr\ty", "z\tr\ty"],
         "w\tr\ty\tv", 4),
        ("kg", "head_id:token\trelation_id:token\ttail_id:token", ["x\tr\ty", "z\tr\ty"],
         "w\tr", 2),
        # a column the reader does not use still counts: the row is damaged
        ("inter", "user_id:token\titem_id:token\tnote:token", ["1\t1\ta", "1\t2\tb", "2\t3\tc"],
         "2\t1", 2),
        ("inter", "user_id:token\titem_id:token", ["1\t1", "1\t2", "2\t3"], "2\t1\t5", 3),
    ],
)
def test_atomic_rows_must_match_the_header(tmp_path, folder_of, ext, header, rows, bad_row,
                                           found, where) -> None:
    lines = list(rows)
    lines.insert(where, bad_row)
    folder = _atomic(folder_of, tmp_path, **{ext: header + "\n" + "\n".join(lines) + "\n"})
    n_fields = header.count("\t") + 1
    message = _error(folder)
    assert message.startswith(f"{folder / f'a.{ext}'}:{where + 2}: expected {n_fields} "
                              f"tab-separated fields as in the header")
    assert f"found {found}: {bad_row!r}" in message


def test_every_row_with_an_extra_field_is_refused_too(tmp_path, folder_of) -> None:
    """A whole file one field wider than its header is not read as index + columns."""
    link = "item_id:token\tentity_id:token\n1\tx\tq\n2\tz\tq\n3\tw\tq\n"
    folder = _atomic(folder_of, tmp_path, link=link)
    assert _error(folder).startswith(f"{folder / 'a.link'}:2: expected 2 tab-separated fields")


def test_blank_lines_and_crlf_are_not_ragged(tmp_path, folder_of) -> None:
    inter = "user_id:token\titem_id:token\r\n1\t1\r\n\r\n1\t2\r\n\n2\t3\r\n\n"
    ds = load_dataset(_atomic(folder_of, tmp_path, inter=inter))
    assert len(ds.interactions) == 3 and ds.report["items_linked_to_kg"] == 3


def test_line_numbers_count_blank_lines_and_gzip(tmp_path, folder_of) -> None:
    folder = _atomic(folder_of, tmp_path)
    (folder / "a.link").unlink()
    with gzip.open(folder / "a.link.gz", "wt") as handle:
        handle.write("item_id:token\tentity_id:token\n1\tx\n\n\n2\tz\t9\n")
    assert _error(folder).startswith(f"{folder / 'a.link.gz'}:5: expected 2 tab-separated")


def test_a_file_that_is_not_utf8_names_its_line(tmp_path, folder_of) -> None:
    folder = _atomic(folder_of, tmp_path)
    (folder / "a.link").write_bytes(b"item_id:token\tentity_id:token\n1\tx\n2\t\xe9t\xe9\n")
    assert _error(folder) == (f"{folder / 'a.link'}:3: not UTF-8 text (byte 0xe9); RecBole "
                              "atomic files are UTF-8")


@pytest.mark.parametrize(
    ("name", "text", "line", "expected"),
    [
        ("kg_final.txt", "1 0 5\n2 0 6 7\n", 2, "expected 3 whitespace-separated columns"),
        ("kg_final.txt", "1 0 5 9\n2 0 6\n", 1, "expected 3 whitespace-separated columns"),
        ("kg_final.txt", "1 0 5\n2 0\n", 2, "expected 3 whitespace-separated columns"),
        ("ratings_final.txt", "0 1 1\n0 2 0 1\n1 2 1\n", 2, "expected 3 whitespace-separated"),
        ("ratings_final.txt", "0 1 1 1\n0 2 0 1\n", 1, "expected 3 whitespace-separated"),
        ("ratings_final.txt", "0 1 1\n0 2\n1 2 1\n", 2, "expected 3 whitespace-separated"),
    ],
)
def test_kgcn_files_have_three_fields_per_row(tmp_path, folder_of, name, text, line,
                                              expected) -> None:
    files = {"ratings_final.txt": "0 1 1\n1 2 1\n", "kg_final.txt": "1 0 5\n"}
    files[name] = text
    folder = folder_of(tmp_path / "kgcn", files)
    assert _error(folder).startswith(f"{folder / name}:{line}: {expected}")


def test_kgat_kg_is_three_fields_while_user_lines_vary(tmp_path, folder_of) -> None:
    files = {"train.txt": "0 1 2 3 4\n1 2\n", "test.txt": "0 5\n1 3 4\n",
             "kg_final.txt": "1 0 7\n2 0 8\n3 1 7 2\n"}
    folder = folder_of(tmp_path / "kgat", files)
    assert _error(folder).startswith(f"{folder / 'kg_final.txt'}:3: expected 3 "
                                     "whitespace-separated columns 'head relation tail', found 4")
    files["kg_final.txt"] = "1 0 7\n2 0 8\n"
    assert load_dataset(folder_of(tmp_path / "ok", files)).n_triples == 2


@pytest.mark.parametrize(("label", "line"), [("-1", 2), ("2", 3), ("1.0", 2)])
def test_kgcn_labels_other_than_0_and_1_are_errors(tmp_path, folder_of, label, line) -> None:
    rows = ["0 1 1", "0 2 0", "1 2 1", "1 3 0"]
    user, item, _ = rows[line - 1].split()
    rows[line - 1] = f"{user} {item} {label}"
    folder = folder_of(tmp_path / "kgcn", {"ratings_final.txt": "\n".join(rows) + "\n"})
    assert _error(folder) == (f"{folder / 'ratings_final.txt'}:{line}: expected label 0 or 1 in "
                              f"column 3 of 'user item label', found {label!r}")


def test_kgcn_negative_ids_are_errors_and_label_0_is_counted(tmp_path, folder_of) -> None:
    folder = folder_of(tmp_path / "kgcn", {"ratings_final.txt": "0 1 1\n0 -2 1\n"})
    assert _error(folder) == (f"{folder / 'ratings_final.txt'}:2: expected non-negative integer "
                              "ids 'user item label', found '-2'")
    ok = folder_of(tmp_path / "ok", {"ratings_final.txt": "0 1 1\n0 2 0\n1 2 1\n1 3 0\n\n"})
    ds = load_dataset(ok)
    assert len(ds.interactions) == 2 and ds.report["negative_labels_dropped"] == 2


def test_the_command_line_prints_one_line(tmp_path, folder_of, capsys) -> None:
    folder = _atomic(folder_of, tmp_path, link="item_id:token\tentity_id:token\n2\tx\tz\n")
    assert main(["data", "stats", str(folder)]) == 2
    err = capsys.readouterr().err
    assert err == (f"error: {folder / 'a.link'}:2: expected 2 tab-separated fields as in the "
                   "header (item_id:token entity_id:token), found 3: '2\\tx\\tz'\n")
