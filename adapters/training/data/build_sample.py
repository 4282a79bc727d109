"""Write the bundled sample files from `conditions.py` (deterministic; rerun after editing):

    python -m adapters.training.data.build_sample

- sample_sft.json       SFT conversations (single- and two-round, Chinese and English),
                        HuatuoGPT2 `conversations` schema, JSON list.
- sample_unified.jsonl  question/answer pairs in the form `huatuo unify` produces from the
                        passages (the "unified pre-training" source), JSONL.
- passages.jsonl        the small passage corpus for `huatuo unify`.
"""

from __future__ import annotations

import json
from pathlib import Path

from adapters.training.data.conditions import CLOSINGS_EN, CLOSINGS_ZH, CONDITIONS

HERE = Path(__file__).resolve().parent


def _conv(id_: str, *texts: str) -> dict:
    return {"id": id_, "conversations": [
        {"from": "human" if i % 2 == 0 else "gpt", "value": t} for i, t in enumerate(texts)]}


def sft_records() -> list[dict]:
    records: list[dict] = []
    for n, (key, zh, en, about_zh, about_en, sym_zh, sym_en, care_zh, care_en, red_zh,
            red_en) in enumerate(CONDITIONS):
        cz, ce = CLOSINGS_ZH[n % 3], CLOSINGS_EN[n % 3]
        en_cap = en[0].upper() + en[1:]
        zh_q = [
            (f"{zh}有哪些常见症状？", f"{about_zh}常见的表现有{sym_zh}。{cz}"),
            (f"得了{zh}在家应该怎么护理？", f"{care_zh}如果出现{red_zh}，请及时就医。"),
            (f"{zh}什么情况下需要去医院？",
             f"出现以下情况时应尽快就医：{red_zh}。平时可以这样做：{care_zh}"),
            (f"我觉得自己可能是{zh}，该怎么办？",
             f"{zh}常见的表现有{sym_zh}。{care_zh}{cz}"),
        ]
        en_q = [
            (f"What are the symptoms of {en}?",
             f"{about_en} Common symptoms are {sym_en}. {ce}"),
            (f"How can I look after myself at home with {en}?",
             f"{care_en} Please see a doctor promptly if you notice {red_en}."),
            (f"When should I see a doctor about {en}?",
             f"Seek medical help soon if you have {red_en}. In the meantime: {care_en}"),
            (f"I think I might have {en}. What should I do?",
             f"{en_cap} typically causes {sym_en}. {care_en} {ce}"),
        ]
        for i, (q, a) in enumerate(zh_q):
            records.append(_conv(f"sft-{key}-zh-{i}", q, a))
        for i, (q, a) in enumerate(en_q):
            records.append(_conv(f"sft-{key}-en-{i}", q, a))
        records.append(_conv(f"sft-{key}-zh-multi", zh_q[0][0], zh_q[0][1],
                             "那平时要注意些什么？", f"{care_zh}{cz}"))
        records.append(_conv(f"sft-{key}-en-multi", en_q[0][0], en_q[0][1],
                             "And what should I watch out for?",
                             f"See a doctor if you notice {red_en}. {ce}"))
    return records


def passages() -> list[dict]:
    out = []
    for key, _zh, _en, about_zh, about_en, sym_zh, sym_en, care_zh, care_en, red_zh, red_en \
            in CONDITIONS:
        out.append({"id": f"{key}-zh", "text": f"{about_zh}常见症状包括{sym_zh}。{care_zh}"
                                               f"出现{red_zh}时应及时就医。"})
        out.append({"id": f"{key}-en", "text": f"{about_en} Common symptoms include {sym_en}. "
                                               f"{care_en} See a doctor if you have {red_en}."})
    return out


def unified_records() -> list[dict]:
    """What `huatuo unify` writes, for the sample: one Q/A per passage."""
    records = []
    for (_key, zh, en, *_), (p_zh, p_en) in zip(CONDITIONS, zip(*[iter(passages())] * 2,
                                                               strict=True), strict=True):
        records.append({"id": p_zh["id"], "source": "passages", "conversations": [
            {"from": "human", "value": f"请介绍一下{zh}。"},
            {"from": "gpt", "value": p_zh["text"]}]})
        records.append({"id": p_en["id"], "source": "passages", "conversations": [
            {"from": "human", "value": f"Can you tell me about {en}?"},
            {"from": "gpt", "value": p_en["text"]}]})
    return records


def main() -> None:
    (HERE / "sample_sft.json").write_text(
        json.dumps(sft_records(), ensure_ascii=False, indent=1) + "\n")
    (HERE / "sample_unified.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in unified_records()))
    (HERE / "passages.jsonl").write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in passages()))


if __name__ == "__main__":
    main()
