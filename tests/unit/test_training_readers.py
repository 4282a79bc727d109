"""Data readers: every published format, and each kind of malformed record rejected."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.training.readers import DataError, read_passages, read_samples


def write(path: Path, data) -> Path:
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in data))
    else:
        path.write_text(json.dumps(data, ensure_ascii=False))
    return path


def conv(*texts: str, id_: str = "x") -> dict:
    return {"id": id_, "conversations": [
        {"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(texts)]}


@pytest.mark.parametrize("name", ["sft.json", "sft.jsonl"])
def test_conversations_json_and_jsonl(tmp_path: Path, name: str) -> None:
    path = write(tmp_path / name, [conv("问1", "答1", "问2", "答2", id_="a"), conv("q", "a")])
    result = read_samples(path, "conversations")
    assert [x.id for x in result.samples] == ["a", "x"]
    assert result.samples[0].rounds == (("问1", "答1"), ("问2", "答2"))
    assert result.samples[0].source == "sft"


def test_upstream_dict(tmp_path: Path) -> None:
    path = write(tmp_path / "u.json", {"web_cn": [["q1", "a1"], ["q2", "a2", "q3", "a3"]],
                                      "SFT_data": [["q", "a"]]})
    result = read_samples(path, "upstream")
    assert [(x.source, x.id) for x in result.samples] == [
        ("web_cn", "web_cn[0]"), ("web_cn", "web_cn[1]"), ("SFT_data", "SFT_data[0]")]
    assert result.samples[1].rounds == (("q2", "a2"), ("q3", "a3"))


def test_sharegpt_and_openai_messages(tmp_path: Path) -> None:
    path = write(tmp_path / "chat.jsonl", [
        {"id": "s1", "conversations": [
            {"from": "gpt", "value": "Hello! How can I help?"},
            {"from": "human", "value": "hi"}, {"from": "gpt", "value": "hello"},
            {"from": "human", "value": "unanswered"}]},
        {"id": "s2", "conversations": [
            {"from": "system", "value": "Be brief."},
            {"from": "user", "value": "q"}, {"from": "chatgpt", "value": "a"}]},
        {"messages": [{"role": "user", "content": "q"}, {"role": "assistant", "content": "a"}]},
    ])
    samples = read_samples(path, "sharegpt").samples
    assert samples[0].rounds == (("hi", "hello"),)
    assert samples[1].rounds == (("Be brief.\nq", "a"),)  # merged like the server's policy
    assert samples[2].rounds == (("q", "a"),) and samples[2].id == "2"


BAD_CONVERSATIONS = [
    ("not an object", ["just a string"], None),
    ("no conversations", [{"id": "a"}], "conversations"),
    ("conversations not a list", [{"conversations": "hi"}], "conversations"),
    ("odd number of turns", [{"conversations": [{"from": "human", "value": "q"}]}],
     "conversations"),
    ("wrong role order", [{"conversations": [{"from": "gpt", "value": "a"},
                                             {"from": "human", "value": "q"}]}],
     "conversations[0].from"),
    ("unknown role", [{"conversations": [{"from": "human", "value": "q"},
                                         {"from": "bot", "value": "a"}]}],
     "conversations[1].from"),
    ("value not a string", [{"conversations": [{"from": "human", "value": 3},
                                               {"from": "gpt", "value": "a"}]}],
     "conversations[0].value"),
    ("empty value", [{"conversations": [{"from": "human", "value": "q"},
                                        {"from": "gpt", "value": "  "}]}],
     "conversations[1].value"),
    ("turn not an object", [{"conversations": ["q", "a"]}], "conversations[0]"),
]


@pytest.mark.parametrize(("case", "records", "field"), BAD_CONVERSATIONS,
                         ids=[c[0] for c in BAD_CONVERSATIONS])
def test_conversations_malformed_record_names_file_record_field(
        tmp_path: Path, case: str, records: list, field: str | None) -> None:
    path = write(tmp_path / "bad.json", [conv("q", "a")] + records)
    with pytest.raises(DataError) as err:
        read_samples(path, "conversations")
    assert err.value.path == str(path)
    assert err.value.record == 1
    assert err.value.field == field
    assert str(path) in str(err.value) and "record 1" in str(err.value)
    # --skip-invalid: skipped and counted, the good record kept.
    result = read_samples(path, "conversations", skip_invalid=True)
    assert len(result.samples) == 1 and result.skipped == 1


def test_invalid_jsonl_line_is_a_bad_record(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(conv("q", "a")) + "\n{broken\n" + json.dumps(conv("q", "a")) + "\n")
    with pytest.raises(DataError, match="record 1"):
        read_samples(path, "conversations")
    result = read_samples(path, "conversations", skip_invalid=True)
    assert len(result.samples) == 2 and result.skipped == 1


def test_invalid_json_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text("[{")
    with pytest.raises(DataError, match="invalid JSON"):
        read_samples(path, "conversations", skip_invalid=True)


@pytest.mark.parametrize(("data", "record", "field"), [
    ({"web": "nope"}, None, "web"),
    ({"web": [["q"]]}, "web[0]", None),
    ({"web": [["q", 5]]}, "web[0]", "[1]"),
    ({"web": ["qa"]}, "web[0]", None),
])
def test_upstream_malformed(tmp_path: Path, data, record, field) -> None:
    path = write(tmp_path / "u.json", data)
    with pytest.raises(DataError) as err:
        read_samples(path, "upstream")
    assert (err.value.record, err.value.field) == (record, field)


@pytest.mark.parametrize(("record", "field"), [
    ({"conversations": [{"from": "human", "value": "a"}, {"from": "human", "value": "b"}]},
     "conversations[1].from"),
    ({"conversations": [{"from": "human", "value": "q"}, {"from": "gpt", "value": "a"},
                        {"from": "system", "value": "late"}]}, "conversations[2].from"),
    ({"conversations": [{"from": "alien", "value": "q"}]}, "conversations[0].from"),
    ({"conversations": [{"from": "human", "value": "only a question"}]}, "conversations"),
    ({"text": "no turns"}, "conversations"),
    ({"messages": [{"role": "user", "content": None}]}, "messages[0].content"),
])
def test_sharegpt_malformed(tmp_path: Path, record: dict, field: str) -> None:
    path = write(tmp_path / "c.jsonl", [record])
    with pytest.raises(DataError) as err:
        read_samples(path, "sharegpt")
    assert err.value.record == 0 and err.value.field == field


def test_passages(tmp_path: Path) -> None:
    jl = write(tmp_path / "p.jsonl", [{"id": "p1", "text": "t1"}, "t2", {"id": "p1", "text": "x"},
                                      {"id": "p4"}])
    with pytest.raises(DataError, match="duplicate id"):
        read_passages(jl)
    passages, skipped = read_passages(jl, skip_invalid=True)
    assert [(p.id, p.text) for p in passages] == [("p1", "t1"), ("1", "t2")]
    assert skipped == 2
    txt = tmp_path / "p.txt"
    txt.write_text("first passage\nline two\n\n\nsecond passage\n")
    passages, _ = read_passages(txt)
    assert [p.text for p in passages] == ["first passage\nline two", "second passage"]


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="file not found"):
        read_samples(tmp_path / "nope.json", "conversations")
