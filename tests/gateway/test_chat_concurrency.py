"""Many concurrent chats: each client gets exactly its own answer."""

from __future__ import annotations

import asyncio
from typing import Any

from helpers import KeyPair, auth_header, read_sse, text_of

from inference_worker.simulator_text import expected_answer


async def test_200_concurrent_chats_have_no_cross_talk(gateway: Any, worker: Any, keys: KeyPair) -> None:
    async def one(i: int) -> tuple[int, str, str]:
        prompt = f"question number {i} from user {i}"
        response = await gateway.post(
            "/chat",
            json={"session_id": f"s{i}", "prompt": prompt},
            headers=auth_header(keys.mint(f"user-{i}")),
        )
        assert response.status == 200
        events = await read_sse(response)
        assert events[-1].event == "done", events[-1]
        assert events[-1].data["session_id"] == f"s{i}"
        return i, prompt, text_of(events)

    results = await asyncio.gather(*(one(i) for i in range(200)))
    answers = set()
    for _i, prompt, text in results:
        assert text == expected_answer("llama3.2", [{"role": "user", "content": prompt}], 24)
        answers.add(text)
    assert len(answers) > 150, "prompts differ, so answers should mostly differ too"
