"""LangChain's answer: ``RunnableParallel({...}).stream()`` over ``ChatOpenAI(streaming=True)``.

What many users reach for: one branch per section (a fixed prompt piped into a ``ChatOpenAI``
that carries the section's simulator controls in ``extra_body``), streamed as dicts of
``{section: AIMessageChunk}``. Nothing is wrapped: when a branch raises, LangChain's stream
raises, which is the behaviour this comparison shows. Needs ``langchain-openai`` (the ``bench``
extra); importing this module without it raises ImportError.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from langchain_core.runnables import RunnableLambda, RunnableParallel
from langchain_openai import ChatOpenAI

from peers.base import API_KEY, Peer, Section, Trace

__all__ = ["LangChainParallel"]


class LangChainParallel(Peer):
    name = "langchain"
    label = "LangChain RunnableParallel.stream (ChatOpenAI, streaming=True)"

    def __init__(
        self, base_url: str, api_key: str = API_KEY, *, max_concurrency: int | None = None
    ):
        super().__init__(base_url, api_key)
        #: None keeps LangChain's default executor size (what a user gets without tuning).
        self.max_concurrency = max_concurrency

    def prepare(self, sections: Sequence[Section]) -> Any:
        branches = {}
        for section in sections:
            llm = ChatOpenAI(
                model=section.model,
                base_url=self.base_url,
                api_key=self.api_key,  # type: ignore[arg-type]
                streaming=True,
                max_retries=0,
                max_tokens=section.max_tokens,  # type: ignore[call-arg]
                extra_body={"sim": dict(section.sim)},
            )
            prompt = section.prompt
            branches[section.name] = RunnableLambda(lambda _input, p=prompt: p) | llm
        return RunnableParallel(branches)

    def run(self, prepared: Any, trace: Trace) -> None:
        for name in trace.sections:
            trace.section_started(name)
        config = {} if self.max_concurrency is None else {"max_concurrency": self.max_concurrency}
        chunk_seen = trace.chunk
        for part in prepared.stream({}, config=config):
            for name, message in part.items():
                content = message.content
                if content:
                    chunk_seen(name, content)
        # The stream gives no per-branch end: every branch ended when it did.
        for name in trace.sections:
            trace.section_ended(name)
