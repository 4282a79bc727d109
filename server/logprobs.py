"""OpenAI's legacy (text completion) `logprobs` object, from vLLM's per-position logprobs.

    {"tokens": [...], "token_logprobs": [...], "top_logprobs": [...], "text_offset": [...]}

Used for generated tokens and, with `echo`, for the prompt's tokens (scoring, as
lm-evaluation-harness does it). A position without logprobs (the first prompt token: nothing
precedes it) has `token_logprobs` and `top_logprobs` null; its token string comes from the
tokenizer. `top_logprobs` holds the chosen token and the `top` most likely ones (up to top + 1
entries, as OpenAI and vLLM return them); -inf becomes -9999.0, as OpenAI sends it.

`text_offset` counts characters of the choice's `text`: each token starts where the previous
one's string ended.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

NO_LOGPROB = -9999.0


def _clamp(value: float) -> float:
    return max(value, NO_LOGPROB)


class LegacyLogprobs:
    """Accumulates the four parallel lists; `extend` once per piece (prompt, then generated)."""

    __slots__ = ("tokens", "token_logprobs", "top_logprobs", "text_offset", "offset")

    def __init__(self, offset: int = 0) -> None:
        self.tokens: list[str] = []
        self.token_logprobs: list[float | None] = []
        self.top_logprobs: list[dict[str, float] | None] = []
        self.text_offset: list[int] = []
        self.offset = offset

    def extend(self, token_ids: Sequence[int], positions: Sequence[dict | None] | None,
               top: int, decode: Callable[[int], str] | None = None,
               start: int | None = None) -> LegacyLogprobs:
        """Add tokens; `positions[i]` maps candidate ids to vLLM `Logprob`s (or is None).

        `start`, when given, is the text offset of the first token added (e.g. the generated
        text starts right after the echoed prompt text, whatever the prompt tokens' strings).
        """
        if start is not None:
            self.offset = start
        positions = positions or ()
        for i, token_id in enumerate(token_ids):
            candidates = positions[i] if i < len(positions) else None
            chosen = candidates.get(token_id) if candidates else None
            if chosen is None:
                token = decode(token_id) if decode is not None else ""
                self.token_logprobs.append(None)
                self.top_logprobs.append(None)
            else:
                token = chosen.decoded_token
                if token is None:
                    token = decode(token_id) if decode is not None else ""
                self.token_logprobs.append(_clamp(chosen.logprob))
                ranked = {token: _clamp(chosen.logprob)}
                for candidate in candidates.values():
                    if candidate.rank is not None and candidate.rank <= top:
                        ranked.setdefault(candidate.decoded_token or "", _clamp(candidate.logprob))
                self.top_logprobs.append(ranked)
            self.tokens.append(token)
            self.text_offset.append(self.offset)
            self.offset += len(token)
        return self

    def as_dict(self) -> dict:
        return {"tokens": self.tokens, "token_logprobs": self.token_logprobs,
                "top_logprobs": self.top_logprobs, "text_offset": self.text_offset}
