"""Upstream HuatuoGPT-II code reproduced as published, to compare our prompt format with."""

from __future__ import annotations


def upstream_generate_prompt(query: str, history: list[tuple[str, str]]) -> str:
    """HuatuoGPT-II's cli_demo `generate_prompt`, reproduced as published."""
    if not history:
        return "<问>：{}\n<答>：".format(query)  # noqa: UP032 - as published
    prompt = ""
    for old_query, response in history:
        prompt += "<问>：{}\n<答>：{}\n".format(old_query, response)  # noqa: UP032
    prompt += "<问>：{}\n<答>：".format(query)  # noqa: UP032
    return prompt
