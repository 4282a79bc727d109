"""Seeded workload generators: what the load generator sends.

Every generator returns a list of `BenchRequest`s and is a pure function of its arguments (the
seed included), so two runs, or two servers in `huatuo bench compare`, see the same requests.

Workloads:
- `single`: one-turn medical questions, Chinese, English or mixed.
- `multi`: consultations of several turns; each turn resends the whole history so far (what chat
  apps do, and what prefix caching speeds up). Assistant turns are synthetic, seeded text, so the
  requests do not depend on what the server answered.
- `long`: prompts whose rendered HuatuoGPT2 prompt fills the context up to `max_tokens` (counted
  with the model's tokenizer when one is given, estimated otherwise).
- a JSONL file of conversations (`load_jsonl`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from huatuogpt2.prompt_format import parse_messages, render

WORKLOADS = ("single", "multi", "long")
LANGUAGES = ("zh", "en", "mixed")


@dataclass(frozen=True)
class BenchRequest:
    """One chat completion to send. `conversation`/`turn` tie multi-turn requests together."""

    messages: list[dict] = field(hash=False)
    max_tokens: int
    conversation: int = 0
    turn: int = 0

    def prompt_text(self) -> str:
        """The HuatuoGPT2 prompt the server renders for these messages."""
        return render(parse_messages(self.messages))


# --- Vocabulary of the generators ---------------------------------------------------------------

_ZH_SYMPTOMS = ["头痛", "咳嗽", "发烧", "胸闷", "腹泻", "失眠", "关节疼痛", "皮疹", "头晕", "胃痛",
                "喉咙痛", "腰痛", "心慌", "恶心", "乏力", "耳鸣"]
_ZH_DURATIONS = ["两天", "一周", "半个月", "三个月", "半年", "好几年"]
_ZH_PEOPLE = ["我", "我妈妈", "我父亲", "我家孩子（5岁）", "我爷爷（78岁）", "我老婆（怀孕20周）"]
_ZH_QUESTIONS = ["应该怎么办？", "需要去医院吗？", "吃什么药比较好？", "是什么原因引起的？",
                 "饮食上要注意什么？", "要做哪些检查？", "会不会很严重？"]
_ZH_EXTRAS = ["", "之前有高血压病史。", "最近工作压力很大。", "吃过布洛芬但没有缓解。",
              "晚上症状会加重。", "有糖尿病，一直在吃二甲双胍。", "没有过敏史。"]
_ZH_FOLLOWUPS = ["那需要吃多久的药？", "这个药有什么副作用？", "平时生活上还要注意什么？",
                 "如果还不好转怎么办？", "可以同时吃感冒药吗？", "孕妇可以用吗？",
                 "需要挂哪个科？", "检查结果正常是不是就没事了？"]
_ZH_ANSWER_BITS = ["建议先注意休息，保持规律作息。", "可以在医生指导下短期服用对症药物。",
                   "如果症状持续或加重，请及时到医院就诊。", "注意清淡饮食，多喝水。",
                   "需要结合血常规等检查进一步判断。", "不要自行增减药物剂量。",
                   "有胸痛、呼吸困难等情况请立即就医。", "可以先观察两三天，记录症状变化。"]

_EN_SYMPTOMS = ["a headache", "a dry cough", "a fever", "chest tightness", "diarrhoea",
                "insomnia", "joint pain", "a rash", "dizziness", "stomach pain", "a sore throat",
                "lower back pain", "palpitations", "nausea", "fatigue", "ringing in the ears"]
_EN_DURATIONS = ["two days", "a week", "two weeks", "three months", "half a year", "years"]
_EN_PEOPLE = [("I have", "I"), ("My mother has", "she"), ("My father has", "he"),
              ("My 5-year-old son has", "he"), ("My 78-year-old grandfather has", "he"),
              ("My wife, 20 weeks pregnant, has", "she")]
_EN_QUESTIONS = ["What should {p} do?", "Does {p} need to see a doctor?",
                 "Which medicine could help?", "What could be causing it?",
                 "What should {p} eat or avoid?", "Which tests are needed?", "Is it serious?"]
_EN_EXTRAS = ["", "There is a history of high blood pressure.", "Work has been stressful lately.",
              "Ibuprofen did not help.", "It gets worse at night.",
              "Type 2 diabetes, on metformin.", "No known allergies."]
_EN_FOLLOWUPS = ["How long should the medicine be taken?", "What are the side effects?",
                 "What else should we watch out for?", "What if it does not get better?",
                 "Can it be taken with cold medicine?", "Is it safe during pregnancy?",
                 "Which department should we visit?", "If the tests are normal, is it fine?"]
_EN_ANSWER_BITS = ["Rest and keep a regular sleep schedule.",
                   "A short course of symptomatic medicine may help, under a doctor's advice.",
                   "If the symptoms persist or worsen, please see a doctor promptly.",
                   "Eat light meals and drink plenty of water.",
                   "A blood test would help to narrow it down.",
                   "Do not change the dose on your own.",
                   "Chest pain or shortness of breath needs emergency care right away.",
                   "Watch it for two or three days and note how it changes."]

# Passages that pad long-context prompts (a "medical record" the patient pastes in).
_ZH_RECORD = ["主诉：反复{s}{d}。", "现病史：患者{d}前无明显诱因出现{s}，休息后可稍缓解。",
              "既往史：否认肝炎、结核等传染病史。", "体格检查：体温36.8℃，脉搏82次/分，血压"
              "128/80mmHg。", "辅助检查：血常规白细胞7.2×10^9/L，中性粒细胞比例65%。",
              "诊断意见：{s}待查，建议进一步检查。", "用药记录：曾自行服用止痛药，效果一般。"]
_EN_RECORD = ["Chief complaint: recurrent {s} for {d}.",
              "History: {s} started {d} ago without a clear trigger and eases with rest.",
              "Past history: no hepatitis or tuberculosis.",
              "Examination: temperature 36.8 C, pulse 82/min, blood pressure 128/80 mmHg.",
              "Tests: white cells 7.2 x10^9/L, neutrophils 65%.",
              "Impression: {s} under investigation; further tests advised.",
              "Medication: took painkillers without much effect."]


def _pick_language(rng: random.Random, language: str) -> str:
    if language not in LANGUAGES:
        raise ValueError(f"language must be one of {LANGUAGES}, got {language!r}")
    return rng.choice(("zh", "en")) if language == "mixed" else language


def medical_question(rng: random.Random, language: str) -> str:
    """One patient question, e.g. '我妈妈头痛一周了，晚上症状会加重。应该怎么办？'."""
    if _pick_language(rng, language) == "zh":
        return (f"{rng.choice(_ZH_PEOPLE)}{rng.choice(_ZH_SYMPTOMS)}{rng.choice(_ZH_DURATIONS)}了，"
                f"{rng.choice(_ZH_EXTRAS)}{rng.choice(_ZH_QUESTIONS)}")
    opening, pronoun = rng.choice(_EN_PEOPLE)
    extra = rng.choice(_EN_EXTRAS)
    question = rng.choice(_EN_QUESTIONS).format(p=pronoun)
    return " ".join(part for part in (
        f"{opening} had {rng.choice(_EN_SYMPTOMS)} for {rng.choice(_EN_DURATIONS)}.", extra,
        question) if part)


def _followup(rng: random.Random, lang: str) -> str:
    return rng.choice(_ZH_FOLLOWUPS if lang == "zh" else _EN_FOLLOWUPS)


def _answer(rng: random.Random, lang: str, sentences: int) -> str:
    bits = _ZH_ANSWER_BITS if lang == "zh" else _EN_ANSWER_BITS
    return ("" if lang == "zh" else " ").join(rng.choice(bits) for _ in range(sentences))


# --- Generators ---------------------------------------------------------------------------------

def single_turn(num: int, *, seed: int = 0, language: str = "mixed",
                max_tokens: int = 64) -> list[BenchRequest]:
    rng = random.Random(seed)
    return [BenchRequest([{"role": "user", "content": medical_question(rng, language)}],
                         max_tokens, conversation=i, turn=0) for i in range(num)]


def multi_turn(num: int, *, seed: int = 0, language: str = "mixed", max_tokens: int = 64,
               turns: tuple[int, int] = (2, 5), answer_sentences: tuple[int, int] = (2, 4)
               ) -> list[BenchRequest]:
    """`num` requests from consultations of `turns` (min, max) user turns each.

    Turn k of a consultation carries the k-1 earlier exchanges. Requests are ordered turn by
    turn across a window of open consultations, so a consultation's next turn comes after the
    other open consultations' current turns (as in a real app, where a patient reads and types
    between turns) and its growing prefix is still in the server's prefix cache.
    """
    rng = random.Random(seed)
    requests: list[BenchRequest] = []
    conversation = 0
    while len(requests) < num:
        # A window of consultations running side by side.
        window = []
        for _ in range(8):
            lang = _pick_language(rng, language)
            window.append((conversation, lang, rng.randint(*turns), medical_question(rng, lang)))
            conversation += 1
        histories: dict[int, list[dict]] = {cid: [] for cid, *_ in window}
        for turn in range(max(n for _, _, n, _ in window)):
            for cid, lang, n_turns, first in window:
                if turn >= n_turns or len(requests) >= num:
                    continue
                history = histories[cid]
                question = first if turn == 0 else _followup(rng, lang)
                messages = [*history, {"role": "user", "content": question}]
                requests.append(BenchRequest(messages, max_tokens, conversation=cid, turn=turn))
                answer = _answer(rng, lang, rng.randint(*answer_sentences))
                histories[cid] = [*messages, {"role": "assistant", "content": answer}]
    return requests


def estimate_tokens(text: str) -> int:
    """Token estimate without a tokenizer: ~1 token per CJK character, ~4 chars otherwise."""
    cjk = sum(1 for ch in text if ord(ch) > 0x2E80)
    return cjk + (len(text) - cjk + 3) // 4


def long_context(num: int, *, max_model_len: int, seed: int = 0, language: str = "mixed",
                 max_tokens: int = 64, fill: float = 0.9,
                 count_tokens: Callable[[str], int] | None = None) -> list[BenchRequest]:
    """Prompts of about `fill` x (max_model_len - max_tokens) tokens: a pasted medical record
    followed by a question. Counted on the rendered HuatuoGPT2 prompt with `count_tokens`
    (the served model's tokenizer) when given, so they fit the context without being refused."""
    count = count_tokens or estimate_tokens
    budget = int((max_model_len - max_tokens) * fill)
    if budget < 16:
        raise ValueError(f"max_model_len {max_model_len} leaves no room for a long prompt "
                         f"with max_tokens {max_tokens}")
    rng = random.Random(seed)
    requests = []
    for i in range(num):
        lang = _pick_language(rng, language)
        question = medical_question(rng, lang)
        symptom = rng.choice(_ZH_SYMPTOMS if lang == "zh" else _EN_SYMPTOMS)
        duration = rng.choice(_ZH_DURATIONS if lang == "zh" else _EN_DURATIONS)
        record_lines = _ZH_RECORD if lang == "zh" else _EN_RECORD
        lines: list[str] = []
        # Grow the record line by line while the rendered prompt stays within the budget.
        while True:
            line = rng.choice(record_lines).format(s=symptom, d=duration)
            text = render(parse_messages(
                [{"role": "user", "content": "\n".join([*lines, line, question])}]))
            if count(text) > budget:
                break
            lines.append(line)
        content = "\n".join([*lines, question])
        requests.append(BenchRequest([{"role": "user", "content": content}], max_tokens,
                                     conversation=i, turn=0))
    return requests


def load_jsonl(path: Path, *, max_tokens: int = 64, expand_turns: bool = True
               ) -> list[BenchRequest]:
    """Conversations from a JSONL file, one per line, in either schema:

    - OpenAI: `{"messages": [{"role": "user", "content": ...}, ...], "max_tokens": 32}`
    - HuatuoGPT2 SFT: `{"conversations": [{"from": "human"|"gpt", "value": ...}, ...]}`

    With `expand_turns`, every user turn becomes a request carrying the history before it
    (a multi-turn consultation); otherwise only the conversation up to its last user turn is sent.
    A line's own `max_tokens` wins over the default.
    """
    requests: list[BenchRequest] = []
    for number, line in enumerate(Path(path).read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            messages = _messages_of(record)
        except (ValueError, KeyError, TypeError) as exc:
            raise ValueError(f"{path}:{number}: not a conversation ({exc})") from exc
        tokens = int(record.get("max_tokens", max_tokens))
        user_positions = [i for i, m in enumerate(messages) if m["role"] == "user"]
        if not user_positions:
            raise ValueError(f"{path}:{number}: no user message")
        ends = user_positions if expand_turns else user_positions[-1:]
        for turn, end in enumerate(ends):
            requests.append(BenchRequest(messages[:end + 1], tokens, conversation=number - 1,
                                         turn=turn))
    if not requests:
        raise ValueError(f"{path}: no conversations")
    return requests


_SFT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
              "system": "system"}


def _messages_of(record: dict) -> list[dict]:
    if "messages" in record:
        messages = [{"role": m["role"], "content": m["content"]} for m in record["messages"]]
    else:
        messages = [{"role": _SFT_ROLES[m["from"]], "content": m["value"]}
                    for m in record["conversations"]]
    parse_messages(messages + ([] if messages[-1]["role"] == "user"
                               else [{"role": "user", "content": "?"}]))  # validates the order
    return messages


def build_workload(name: str, num: int, *, seed: int = 0, language: str = "mixed",
                   max_tokens: int = 64, max_model_len: int = 4096,
                   count_tokens: Callable[[str], int] | None = None,
                   jsonl: Path | None = None) -> list[BenchRequest]:
    """The named workload, `num` requests long (a JSONL file is cycled or cut to `num`)."""
    if jsonl is not None:
        return cycle_to(load_jsonl(jsonl, max_tokens=max_tokens), num)
    if name == "single":
        return single_turn(num, seed=seed, language=language, max_tokens=max_tokens)
    if name == "multi":
        return multi_turn(num, seed=seed, language=language, max_tokens=max_tokens)
    if name == "long":
        return long_context(num, max_model_len=max_model_len, seed=seed, language=language,
                            max_tokens=max_tokens, count_tokens=count_tokens)
    raise ValueError(f"workload must be one of {WORKLOADS}, got {name!r}")


def cycle_to(requests: Sequence[BenchRequest], num: int) -> list[BenchRequest]:
    return [requests[i % len(requests)] for i in range(num)]


def tokenizer_counter(model_dir: Path) -> Callable[[str], int]:
    """Token counter of a checkpoint's tokenizer (no BOS, as HuatuoGPT2 prompts have none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    return lambda text: len(tokenizer.encode(text, add_special_tokens=False))
