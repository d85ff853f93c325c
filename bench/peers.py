"""Measure 7: the LiteLLM proxy as a fourth path, installed into its own venv (bench/.venv-litellm)."""

from __future__ import annotations

import json
import secrets
import shutil
import subprocess
from pathlib import Path

from .procs import BENCH, Proc, free_port, pin

VENV = BENCH / ".venv-litellm"


def ensure_litellm(log: Path) -> tuple[Path | None, str]:
    """The `litellm` executable, installing `litellm[proxy]` on first use; (None, why) if that fails."""
    exe = VENV / "bin" / "litellm"
    if exe.exists():
        return exe, _version()
    python3 = shutil.which("python3")
    if python3 is None:
        return None, "no python3 to create its venv"
    with open(log, "ab") as out:
        steps = [
            [python3, "-m", "venv", str(VENV)],
            [str(VENV / "bin" / "pip"), "install", "--quiet", "litellm[proxy]"],
        ]
        for step in steps:
            try:
                code = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT, timeout=900).returncode
            except (OSError, subprocess.TimeoutExpired) as e:
                return None, f"install failed: {e}"
            if code != 0:
                return None, f"`{' '.join(step[-2:])}` exited with {code} (see {log})"
    return (exe, _version()) if exe.exists() else (None, "installed, but no litellm executable")


def _version() -> str:
    try:
        out = subprocess.run(
            [
                str(VENV / "bin" / "python"),
                "-c",
                "from importlib.metadata import version; print(version('litellm'))",
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        return out.stdout.strip() or "?"
    except (OSError, subprocess.TimeoutExpired):
        return "?"


class LiteLLMProxy(Proc):
    """`litellm --config` with one model routed to the mock as an OpenAI-compatible backend, no database.

    LiteLLM does not forward a client's `x-*` headers by default, so the mock's timing headers are set
    per model in the config (`extra_headers`); the master key is a fresh random one.
    """

    name = "litellm"

    def __init__(
        self, exe: Path, upstream: str, workdir: Path, mock_headers: dict[str, str], cpu: int | None = None
    ) -> None:
        port = free_port()
        self.master_key = "sk-" + secrets.token_hex(32)
        self.ttft_log = workdir / "litellm-ttft.jsonl"
        shutil.copy(BENCH / "litellm_callback.py", workdir / "litellm_callback.py")
        config = {
            "model_list": [
                {
                    "model_name": "mock-gpt",
                    "litellm_params": {
                        "model": "openai/mock-gpt",
                        "api_base": f"{upstream}/v1",
                        "api_key": "sk-bench",
                        "extra_headers": mock_headers,
                    },
                }
            ],
            "litellm_settings": {"telemetry": False, "callbacks": "litellm_callback.handler"},
            "general_settings": {"master_key": self.master_key},
        }
        cfg = workdir / "litellm.yaml"
        cfg.write_text(json.dumps(config, indent=2))  # JSON is YAML
        args = [*pin(cpu), str(exe), "--config", str(cfg), "--host", "127.0.0.1", "--port", str(port)]
        args += ["--num_workers", "1"]
        env = {
            "LITELLM_LOCAL_MODEL_COST_MAP": "True",  # no fetch of the price list at start-up
            "BENCH_LITELLM_LOG": str(self.ttft_log),
            "LITELLM_LOG": "ERROR",
        }
        super().__init__(args, port, workdir, env)
        self.env.pop("PYTHONPATH", None)

    def recorded_ttft(self) -> dict[str, float]:
        """completion id -> the TTFT LiteLLM logged (completion_start_time - start_time)."""
        out: dict[str, float] = {}
        try:
            lines = self.ttft_log.read_text().splitlines()
        except OSError:
            return out
        for line in lines:
            obj = json.loads(line)
            if obj.get("id"):
                out[obj["id"]] = float(obj["ttft_ms"])
        return out
