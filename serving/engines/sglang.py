"""SGLang (``python -m sglang.launch_server``) with LoRA, for GPUs.

Its python is SGLang's own environment (SGLang pins its own torch). The engine's weights are the champion's
adapter merged into the base model (the anchor); every other version is loaded beside it with
``/load_lora_adapter`` as a delta adapter against the anchor (:mod:`serving.bundle`), and a request picks one
with ``"model": "<served name>:<adapter name>"``. ``lora=False``: plain weights only, at full speed (an SGLang
server with LoRA enabled runs every batch through the LoRA kernels; bench_serving.py measured it); such an
engine follows the champion with ``/update_weights_from_disk``.
"""

import os
import shutil
import subprocess

import httpx

from .base import (
    JSON_OBJECT,
    JSON_SCHEMA,
    STRICT_TOOLS,
    TOOL_CHOICE,
    TOOLS,
    Engine,
    EngineHandle,
    Launch,
    ModelFolders,
    Release,
    arg_value,
)
from .process import EngineError

LORA_TARGET_MODULES = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def gpu_visible() -> bool:
    """True when ``nvidia-smi -L`` lists a GPU (no CUDA initialization in the calling process)."""
    if os.environ.get("CUDA_VISIBLE_DEVICES", None) == "":
        return False
    exe = shutil.which("nvidia-smi")
    if not exe:
        return False
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return False
    return out.returncode == 0 and "GPU" in out.stdout


def sglang_command(
    *,
    python: str,
    model_path: str,
    host: str,
    port: int,
    served_name: str,
    adapters: dict[str, str] | None = None,
    max_lora_rank: int = 64,
    max_loras_per_batch: int = 4,
    lora: bool = True,
    extra_args: list[str] | None = None,
) -> list[str]:
    """``python -m sglang.launch_server`` serving ``model_path`` as ``served_name`` with LoRA slots for the
    adapters (``{name: path}``, loadable later too). ``max_lora_rank`` must cover delta adapters (the sum of
    two adapters' ranks, see :mod:`serving.bundle`). ``lora=False``: plain weights only, at full speed."""
    cmd = [
        python,
        "-m",
        "sglang.launch_server",
        "--model-path",
        model_path,
        "--host",
        host,
        "--port",
        str(port),
        "--served-model-name",
        served_name,
    ]
    if not lora:
        return cmd + list(extra_args or [])
    cmd += [
        "--enable-lora",
        "--max-lora-rank",
        str(max_lora_rank),
        "--max-loras-per-batch",
        str(max_loras_per_batch),
        "--lora-target-modules",
        *LORA_TARGET_MODULES,
    ]
    if adapters:
        cmd += ["--lora-paths", *[f"{name}={path}" for name, path in adapters.items()]]
    return cmd + list(extra_args or [])


class SGLangEngine(Engine):
    backend = "sglang"
    package = "sglang"
    serves_adapters = True
    swaps_weights = True
    runs_on_kubernetes = True

    @classmethod
    def usable_here(cls) -> bool:
        return gpu_visible()

    def features(self) -> frozenset[str]:
        """SGLang 0.5's OpenAI API constrains decoding to ``response_format`` (``json_object``: any object;
        ``json_schema``: the schema) with its grammar backend (xgrammar unless ``--grammar-backend none``), and
        parses tool calls out of the output only with ``--tool-call-parser <model family>`` in ``sglang_args``
        (without one it renders ``tools`` into the prompt but answers plain text); ``tool_choice``
        ``required`` / a named function needs both (a grammar of the calls, then the parser), and so do
        ``strict`` functions (the calls constrained by a structural tag; parsers of JSON-shaped calls)."""
        args = self.config.extra_args
        grammar = arg_value(args, "--grammar-backend") != "none"
        parser = arg_value(args, "--tool-call-parser") is not None
        features = {JSON_OBJECT, JSON_SCHEMA} if grammar else set()
        if parser:
            features.add(TOOLS)
        if grammar and parser:
            features |= {TOOL_CHOICE, STRICT_TOOLS}
        return frozenset(features)

    def launch(self, champion: Release, folders: ModelFolders) -> Launch:
        folders.remember(champion)
        models, adapters = {champion.version: self.served_name}, {}
        if self.config.lora:  # the bare base model is one delta away from the anchor
            adapters["base"] = folders.delta(None, champion.version)
            models["base"] = f"{self.served_name}:base"
        return Launch(model_path=folders.merged(champion), adapters=adapters, models=models, anchor=champion.version)

    def command(self, launch: Launch, host: str | None = None) -> list[str]:
        cfg = self.config
        return sglang_command(
            python=cfg.python,
            model_path=launch.model_path,
            host=host or cfg.host,
            port=cfg.port,
            served_name=self.served_name,
            adapters=launch.adapters or None,
            lora=cfg.lora,
            max_lora_rank=cfg.max_lora_rank,
            extra_args=cfg.extra_args,
        )

    def add_version(
        self, handle: EngineHandle, release: Release, folders: ModelFolders, promote: bool = True
    ) -> str | None:
        """LoRA engine: the delta of ``release`` against the anchor, loaded with ``/load_lora_adapter``.
        LoRA-free engine: it serves one version, the champion; it takes ``release`` only when ``promote``, by
        swapping in its merged weights (until then, and while a canary runs, the LoRA engine serves it)."""
        if release.version in handle.models:
            return handle.models[release.version]
        if not handle.lora:
            if not promote:
                return None
            merged = folders.merged(release)
            self.update_weights(merged)
            handle.models, handle.anchor, handle.weights = {release.version: self.served_name}, release.version, merged
            folders.remember(release)
            return self.served_name
        name = f"v{release.version}"
        delta = folders.delta(release, handle.anchor)
        self.load_adapter(name, delta)
        handle.adapters[name] = delta
        handle.models[release.version] = f"{self.served_name}:{name}"
        folders.remember(release)
        return handle.models[release.version]

    def load_adapter(self, name: str, path: str, timeout_s: float = 300.0) -> None:
        """``POST /load_lora_adapter``."""
        r = httpx.post(f"{self.url}/load_lora_adapter", json={"lora_name": name, "lora_path": path}, timeout=timeout_s)
        body = r.text
        if r.status_code != 200 or '"success":false' in body.replace(" ", ""):
            raise EngineError(
                f"{self.url}: loading adapter {name!r} from {path} failed ({r.status_code}): {body[:500]}"
            )

    def unload_adapter(self, name: str, timeout_s: float = 60.0) -> None:
        r = httpx.post(f"{self.url}/unload_lora_adapter", json={"lora_name": name}, timeout=timeout_s)
        if r.status_code != 200:
            raise EngineError(f"{self.url}: unloading adapter {name!r} failed ({r.status_code}): {r.text[:500]}")

    def update_weights(self, model_path: str, timeout_s: float = 600.0) -> dict:
        """Swap the running server's weights in place (``POST /update_weights_from_disk``); requests in flight
        are paused, not dropped."""
        r = httpx.post(f"{self.url}/update_weights_from_disk", json={"model_path": model_path}, timeout=timeout_s)
        body = r.json() if r.headers.get("content-type", "").startswith("application/json") else {"message": r.text}
        if r.status_code != 200 or not body.get("success", False):
            raise EngineError(
                f"{self.url}: updating weights from {model_path} failed ({r.status_code}): {str(body)[:500]}"
            )
        return body
