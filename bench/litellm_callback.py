"""Loaded by the LiteLLM proxy under test (`litellm_settings.callbacks`): writes what LiteLLM itself
records of each streamed completion, its time to first token, one JSON line per request."""

from __future__ import annotations

import json
import os
from typing import Any

from litellm.integrations.custom_logger import CustomLogger  # type: ignore[import-not-found]


class _FirstToken(CustomLogger):  # type: ignore[misc]
    async def async_log_success_event(
        self, kwargs: Any, response_obj: Any, start_time: Any, end_time: Any
    ) -> None:
        first = kwargs.get("completion_start_time")
        if first is None:
            return
        line = {
            "id": getattr(response_obj, "id", None),
            "ttft_ms": (first - start_time).total_seconds() * 1000,
        }
        with open(os.environ["BENCH_LITELLM_LOG"], "a") as f:
            f.write(json.dumps(line) + "\n")


handler = _FirstToken()
