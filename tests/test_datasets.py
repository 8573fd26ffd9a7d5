"""Data loaders on damaged files: one clear DataFormatError naming the file and the line or record, never a bare
KeyError or JSONDecodeError traceback; blank lines in JSONL files are skipped.

Each test writes its own tmp data folder laid out like ../shared/data and points DIVCON_DATA at it; the loaders cache
by path, and every tmp_path is distinct, so no test sees another's file."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

import pytest

from divcon.tasks import datasets as ds
from divcon.tasks.datasets import DataFormatError


@pytest.fixture
def data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "data"
    monkeypatch.setenv("DIVCON_DATA", str(root))
    return root


def _write(root: Path, rel: str, text: str) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if rel.endswith(".gz"):
        path.write_bytes(gzip.compress(text.encode("utf-8")))
    else:
        path.write_text(text, encoding="utf-8")
    return path


def _gsm(question: str, gold: str) -> str:
    return json.dumps({"question": question, "answer": f"work\n#### {gold}"}) + "\n"


def _drop(question: str, refs: str) -> str:
    return json.dumps({"context": f"Passage: P.\nQuestion: {question}\nAnswer:", "completion": " x",
                       "ref_text": refs}) + "\n"


def test_gsm8k_skips_blank_lines(data):
    _write(data, "gsm8k/test.jsonl", _gsm("1+1?", "2") + "\n" + _gsm("2+2?", "1,004") + "\n\n")
    exs = ds.gsm8k("test")
    assert [(e.id, e.question, e.golds) for e in exs] == [("gsm8k-test-0", "1+1?", ["2"]),
                                                          ("gsm8k-test-1", "2+2?", ["1004"])]


def test_gsm8k_malformed_line_names_file_and_line(data):
    path = _write(data, "gsm8k/test.jsonl", _gsm("1+1?", "2") + "\n" + '{"question": "x", "answer": \n')
    with pytest.raises(DataFormatError, match=r"test\.jsonl: line 3: not valid JSON") as e:
        ds.gsm8k("test")
    assert str(path) in str(e.value)


@pytest.mark.parametrize("record,field", [({"answer": "#### 2"}, "question"), ({"question": "q"}, "answer")])
def test_gsm8k_missing_field_names_file_line_and_field(data, record, field):
    path = _write(data, "gsm8k/train.jsonl", _gsm("1+1?", "2") + json.dumps(record) + "\n")
    with pytest.raises(DataFormatError, match=rf"train\.jsonl: line 2: missing field '{field}'") as e:
        ds.gsm8k("train")
    assert str(path) in str(e.value)


def test_gsm8k_record_that_is_not_an_object(data):
    _write(data, "gsm8k/test.jsonl", "[1, 2]\n")
    with pytest.raises(DataFormatError, match=r"line 1: expected a JSON object"):
        ds.gsm8k("test")


def test_drop_gz_blank_lines_bad_line_and_missing_field(data, tmp_path, monkeypatch):
    _write(data, "drop/drop_v0_dev.jsonl.gz", _drop("How many?", "3|three") + "\n")
    assert [(e.id, e.golds) for e in ds.drop_dev()] == [("drop-0", ["3", "three"])]

    bad = tmp_path / "bad"
    monkeypatch.setenv("DIVCON_DATA", str(bad))
    _write(bad, "drop/drop_v0_dev.jsonl.gz", _drop("How many?", "3") + "not json\n")
    with pytest.raises(DataFormatError, match=r"drop_v0_dev\.jsonl\.gz: line 2: not valid JSON"):
        ds.drop_dev()

    missing = tmp_path / "missing"
    monkeypatch.setenv("DIVCON_DATA", str(missing))
    _write(missing, "drop/drop_v0_dev.jsonl.gz", json.dumps({"context": "Passage: P.\nQuestion: Q\nAnswer:"}) + "\n")
    with pytest.raises(DataFormatError, match=r"drop_v0_dev\.jsonl\.gz: line 1: missing field 'ref_text'"):
        ds.drop_dev()


def test_drop_bad_layout_and_not_gzip(data, tmp_path, monkeypatch):
    _write(data, "drop/drop_v0_dev.jsonl.gz", json.dumps({"context": "no layout", "ref_text": "3"}) + "\n")
    with pytest.raises(DataFormatError, match=r"line 1: 'context' does not have the Passage/Question/Answer"):
        ds.drop_dev()

    plain = tmp_path / "plain"
    monkeypatch.setenv("DIVCON_DATA", str(plain))
    (plain / "drop").mkdir(parents=True)
    (plain / "drop" / "drop_v0_dev.jsonl.gz").write_text(_drop("Q", "3"))  # not gzipped
    with pytest.raises(DataFormatError, match=r"drop_v0_dev\.jsonl\.gz: cannot be read"):
        ds.drop_dev()


def test_json_qa_malformed_and_missing_field(data, tmp_path, monkeypatch):
    path = _write(data, "bamboogle/qa.json", '[{"question": "Q?", "answer": "A"},\n {"question": }]')
    with pytest.raises(DataFormatError, match=r"qa\.json: not valid JSON \(.*line 2") as e:
        ds.json_qa("bamboogle", "qa.json")
    assert str(path) in str(e.value)

    other = tmp_path / "other"
    monkeypatch.setenv("DIVCON_DATA", str(other))
    _write(other, "hotpotqa/dev.json", json.dumps([{"question": "Q?", "answer": "A"}, {"question": "R?"}]))
    with pytest.raises(DataFormatError, match=r"dev\.json: record 2: missing field 'answer'"):
        ds.json_qa("hotpotqa", "dev.json")


def test_json_qa_not_a_list(data):
    _write(data, "musique/qa.json", json.dumps({"question": "Q?", "answer": "A"}))
    with pytest.raises(DataFormatError, match=r"qa\.json: expected a JSON list"):
        ds.json_qa("musique", "qa.json")


def test_json_qa_still_loads(data):
    _write(data, "bamboogle/ok.json", json.dumps([{"question": " Q? ", "answer": 1932}]))
    exs = ds.json_qa("bamboogle", "ok.json")
    assert [(e.id, e.question, e.golds) for e in exs] == [("bamboogle-0", "Q?", ["1932"])]


def test_svamp_missing_field_names_record(data):
    good = {"ID": "chal-1", "Body": "B.", "Question": "Q?", "Answer": 51.0}
    _write(data, "svamp/SVAMP.json", json.dumps([good, {**good, "ID": "chal-2", "Body": None}]))
    with pytest.raises(DataFormatError, match=r"SVAMP\.json: record 2: field 'Body' has the wrong type"):
        ds.svamp()


def test_svamp_malformed(data):
    _write(data, "svamp/SVAMP.json", "[{")
    with pytest.raises(DataFormatError, match=r"SVAMP\.json: not valid JSON"):
        ds.svamp()


def test_multiarith_missing_field_and_empty_solutions(data, tmp_path, monkeypatch):
    good = {"iIndex": 0, "sQuestion": " Q? ", "lSolutions": [39.0]}
    _write(data, "multiarith/MultiArith.json", json.dumps([good, {"iIndex": 1, "lSolutions": [2.0]}]))
    with pytest.raises(DataFormatError, match=r"MultiArith\.json: record 2: missing field 'sQuestion'"):
        ds.multiarith()

    other = tmp_path / "other"
    monkeypatch.setenv("DIVCON_DATA", str(other))
    _write(other, "multiarith/MultiArith.json", json.dumps([good, {**good, "lSolutions": []}]))
    with pytest.raises(DataFormatError, match=r"record 2: field 'lSolutions' does not start with a number"):
        ds.multiarith()


def test_asdiv_parse_error_names_file(data):
    path = _write(data, "asdiv/ASDiv.xml", "<Machine-Reading-Corpus-File><Problem ID='1'>\n<Body>x</Bod>")
    with pytest.raises(DataFormatError, match=r"ASDiv\.xml: not well-formed XML") as e:
        ds.asdiv()
    assert str(path) in str(e.value)


def test_data_format_error_is_a_value_error():
    """The CLI turns ValueError into a one-line error, so a damaged data file needs no new handling there."""
    assert issubclass(DataFormatError, ValueError)


def _aqua(correct: str = "B", options: list | None = None) -> str:
    return json.dumps({"question": "What is 6 x 7?", "options": options or ["A)40", "B)42", "C)44", "D)46", "E)48"],
                       "rationale": "6 x 7 = 42", "correct": correct}) + "\n"


def test_aqua_question_shows_the_choices_and_golds_are_letter_and_option(data):
    _write(data, "aqua/test.json", _aqua() + "\n" + _aqua("E", ["A)1", "B)2", "C)3", "D)4", "E)None of these"]))
    first, second = ds.aqua("test")
    assert first.question.endswith("Answer choices: (A) 40 (B) 42 (C) 44 (D) 46 (E) 48\n"
                                   "Answer with the letter of the correct choice.")
    assert first.golds == ["B", "42"] and second.golds == ["E", "None of these"] and second.id == "aqua-test-1"


@pytest.mark.parametrize("line,msg", [(_aqua("F"), "'correct' is 'F'"), (_aqua(options=["A 40"]), "option 'A 40'"),
                                      ('{"question": "q"}\n', "missing field 'options'")])
def test_aqua_malformed_names_file_and_line(data, line, msg):
    _write(data, "aqua/dev.json", _aqua() + line)
    with pytest.raises(DataFormatError, match=rf"dev.json: line 2: .*{msg}"):
        ds.aqua("dev")
