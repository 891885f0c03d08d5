import json

import pytest

from edgec.data import Columns, read_dataset, read_sts_benchmark
from edgec.errors import InputError


def test_txt_skips_blank_lines(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("one\n\n two \n")
    assert read_dataset(path).texts == ["one", "two"]


def test_jsonl_fields(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"text": "a", "text_pair": "b", "score": 3}) + "\n" + json.dumps({"text": "c", "text_pair": "d", "score": "1.5"}) + "\n")
    data = read_dataset(path)
    assert data.has_pairs and data.has_scores and not data.has_labels
    assert [e.score for e in data.examples] == [3.0, 1.5]


def test_csv_and_tsv_columns(tmp_path):
    csv_path = tmp_path / "a.csv"
    csv_path.write_text('sentence,label\n"hello, world",1\nbye,0\n')
    data = read_dataset(csv_path, Columns(text="sentence", label="label"))
    assert data.texts == ["hello, world", "bye"] and [e.label for e in data.examples] == [1, 0]
    tsv_path = tmp_path / "a.tsv"
    tsv_path.write_text("text\tother\nx\ty\n")
    assert read_dataset(tsv_path).texts == ["x"]


@pytest.mark.parametrize(
    "name, content, message",
    [
        ("empty.txt", "\n\n", "no examples"),
        ("bad.jsonl", '{"text": "a"}\n{oops\n', "bad.jsonl:2"),
        ("notext.jsonl", '{"sentence": "a"}\n', '"text" field'),
        ("extra.jsonl", '{"text": "a", "lable": 1}\n', "unknown field"),
        ("score.jsonl", '{"text": "a", "score": "high"}\n', "not a number"),
        ("cols.csv", "a,b\n1,2\n", "not in the header"),
        ("data.parquet", "x", "unknown extension"),
    ],
)
def test_malformed_files_name_the_problem(tmp_path, name, content, message):
    path = tmp_path / name
    path.write_text(content)
    with pytest.raises(InputError, match=message):
        read_dataset(path)


def test_missing_and_binary_files(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        read_dataset(tmp_path / "nope.txt")
    binary = tmp_path / "bin.txt"
    binary.write_bytes(b"\xff\xfe\x00bad")
    with pytest.raises(InputError, match="UTF-8"):
        read_dataset(binary)


def test_sampling_is_deterministic_and_ordered(tmp_path):
    path = tmp_path / "a.txt"
    path.write_text("\n".join(f"t{i}" for i in range(100)))
    data = read_dataset(path)
    first, second = data.sample(10, seed=3), data.sample(10, seed=3)
    assert first == second and len(first) == 10
    indices = [int(t[1:]) for t in first.texts]
    assert indices == sorted(indices)
    assert data.sample(1000) is data


def test_single_texts_interleaves_pairs(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(json.dumps({"text": "a", "text_pair": "b"}) + "\n" + json.dumps({"text": "c", "text_pair": "d"}) + "\n")
    assert read_dataset(path).single_texts().texts == ["a", "b", "c", "d"]


def test_sts_benchmark_layout(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text("main-news\tfile\t2012\t1\t4.5\tA man runs.\tA person runs.\textra\tcols\n")
    example = read_sts_benchmark(path).examples[0]
    assert (example.text, example.text_pair, example.score) == ("A man runs.", "A person runs.", 4.5)
