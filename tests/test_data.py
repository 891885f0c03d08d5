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
    path.write_text(
        json.dumps({"text": "a", "text_pair": "b", "score": 3})
        + "\n"
        + json.dumps({"text": "c", "text_pair": "d", "score": "1.5"})
        + "\n"
    )
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
    path.write_text(
        json.dumps({"text": "a", "text_pair": "b"}) + "\n" + json.dumps({"text": "c", "text_pair": "d"}) + "\n"
    )
    assert read_dataset(path).single_texts().texts == ["a", "b", "c", "d"]


def test_sts_benchmark_layout(tmp_path):
    path = tmp_path / "sts.csv"
    path.write_text("main-news\tfile\t2012\t1\t4.5\tA man runs.\tA person runs.\textra\tcols\n")
    example = read_sts_benchmark(path).examples[0]
    assert (example.text, example.text_pair, example.score) == ("A man runs.", "A person runs.", 4.5)


@pytest.mark.parametrize(
    "rows, message",
    [
        ([{"text": "a", "label": 1}, {"text": "b"}], r"a.jsonl:2: no label here, but line 1 has a label"),
        ([{"text": "a"}, {"text": "b", "score": 2.0}], r"a.jsonl:1: no score here, but line 2 has a score"),
        ([{"text": "a", "text_pair": "x"}, {"text": "b"}], r"a.jsonl:2: no text_pair"),
        ([{"text": "a", "label": [1]}], r"a.jsonl:1: label \[1\] is neither a class id"),
        ([{"text": "a", "label": 1.7}], r"a.jsonl:1: label 1.7 is neither a class id"),
        ([{"text": "a", "label": True}], r"a.jsonl:1: label True"),
        ([{"text": "a", "score": [1, 2]}], r"a.jsonl:1: score \[1, 2\] is not a number"),
        ([{"text": "a", "score": {"v": 1}}], r"a.jsonl:1: score .* is not a number"),
        ([{"text": "a", "score": "NaN"}], r"a.jsonl:1: score 'NaN' is not a finite number"),
        ([{"text": "a", "text_pair": 3}], r"a.jsonl:1: \"text_pair\" must be a string"),
    ],
)
def test_bad_values_name_the_file_and_line(tmp_path, rows, message):
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with pytest.raises(InputError, match=message):
        read_dataset(path)


def test_labels_are_class_ids_or_names(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text(
        "".join(json.dumps({"text": t, "label": v}) + "\n" for t, v in [("a", 1.0), ("b", "2"), ("c", "positive")])
    )
    assert [e.label for e in read_dataset(path).examples] == [1, 2, "positive"]
    table = tmp_path / "a.csv"
    table.write_text("text,label\na,1\nb,\n")
    with pytest.raises(InputError, match=r"a.csv:3: no label here, but line 2 has a label"):
        read_dataset(table, Columns(label="label"))


def test_a_sample_drawn_while_reading_equals_the_sample_of_the_whole_file(tmp_path):
    path = tmp_path / "a.jsonl"
    path.write_text("".join(json.dumps({"text": f"t{i}", "label": i % 3}) + "\n" for i in range(500)))
    whole = read_dataset(path)
    for n, seed in ((1, 0), (37, 0), (37, 5), (499, 2)):
        assert read_dataset(path, sample=n, seed=seed) == whole.sample(n, seed)
    assert read_dataset(path, sample=10_000) == whole


def test_sampling_a_large_file_keeps_only_the_sample_in_memory(tmp_path):
    import tracemalloc

    path = tmp_path / "big.jsonl"
    with open(path, "w") as handle:
        handle.writelines(
            json.dumps({"text": f"sentence number {i} with a few more words in it", "score": i % 5}) + "\n"
            for i in range(60_000)
        )
    peaks = []
    for sample in (None, 64):
        tracemalloc.start()
        data = read_dataset(path, sample=sample)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        del data
    assert peaks[1] < peaks[0] / 20, peaks  # the whole file as examples, against 64 of them
