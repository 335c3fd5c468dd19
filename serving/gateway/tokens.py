"""Prompt and output tokens counted as the engine counts them, for honest rate-limit accounting.

The served version's tokenizer folder (``tokenizer.json``, ``tokenizer_config.json``, ``chat_template.jinja``;
the routing table names it per version, see :mod:`serving.gateway.routing`) is loaded once with the
``tokenizers`` library (Rust, ~5 MB; not ``transformers``, which would add ~1.3 s and ~220 MB to every gateway
worker) and cached. What is counted is what the engines tokenize (``transformers serve`` and SGLang alike):

* a completion prompt: ``tokenizer(prompt)``, special tokens included (BOS where the tokenizer adds one);
* chat messages: the chat template rendered with ``add_generation_prompt=True`` (Jinja2 in a sandbox, with the
  tokenizer's special tokens, ``raise_exception``, ``strftime_now`` and ``tojson`` as transformers provides them),
  then tokenized without adding special tokens (the template writes them). A template that cannot be compiled or
  rendered here is replaced by the messages' tokens plus :data:`MESSAGE_OVERHEAD` per message and
  :data:`MESSAGE_OVERHEAD` for the generation prompt (an upper bound for common templates, not exact).

Without a tokenizer (none routed, or its folder unreadable) the count falls back to an **upper bound**: the
UTF-8 bytes of the text plus :data:`SPECIAL_ALLOWANCE` (a byte-level BPE never makes more tokens than bytes; a
SentencePiece tokenizer with byte fallback at most one more), and for chat :data:`MESSAGE_OVERHEAD` per message
on top. Over-reserving is safe: the gateway gives back what the engine did not use.

Speed (tests/serving/test_tokens.py measures it): a short prompt is counted in tens of µs, inline; a prompt
longer than :attr:`TokenCounter.inline_chars` characters (a 32k-character prompt takes milliseconds) is counted
in a worker thread through ``encode_batch``, which releases the GIL, so the event loop keeps running.
"""

import asyncio
import json
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

log = logging.getLogger("crawl2serve.gateway")

SPECIAL_ALLOWANCE = 2  # BOS/EOS a tokenizer may add around a text
MESSAGE_OVERHEAD = 16  # role markers and separators a chat template may write around one message


def utf8_upper_bound(text: str) -> int:
    """An upper bound of the tokens of ``text`` without its tokenizer: UTF-8 bytes + :data:`SPECIAL_ALLOWANCE`."""
    return len(text.encode("utf-8", "surrogatepass")) + SPECIAL_ALLOWANCE


def _special(value) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and isinstance(value.get("content"), str):
        return value["content"]
    return None


def _compile_template(source: str):
    """The chat template compiled like transformers does (sandboxed, trim_blocks/lstrip_blocks, loop controls)."""
    import jinja2
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=["jinja2.ext.loopcontrols"])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(source)


def _reads(source: str, name: str) -> bool:
    """Whether the Jinja template ``source`` reads the variable ``name`` anywhere (parsed, not searched)."""
    import jinja2.meta
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    env = ImmutableSandboxedEnvironment(extensions=["jinja2.ext.loopcontrols"])
    return name in jinja2.meta.find_undeclared_variables(env.parse(source))


@dataclass
class Tokenizer:
    """One loaded tokenizer folder: the fast tokenizer, its chat template (or None) and its special tokens."""

    folder: str
    backend: object  # tokenizers.Tokenizer
    template: object | None  # jinja2.Template
    specials: dict[str, str]
    add_bos_id: int | None  # set when the config asks for a BOS the tokenizer.json does not add itself
    add_eos_id: int | None
    reads_tools: bool | None = None  # whether the chat template reads ``tools`` at all (None: no template here)

    @classmethod
    def load(cls, folder: str) -> "Tokenizer":
        import tokenizers

        path = Path(folder)
        backend = tokenizers.Tokenizer.from_file(str(path / "tokenizer.json"))
        config = {}
        if (path / "tokenizer_config.json").is_file():
            config = json.loads((path / "tokenizer_config.json").read_text())
        specials = {
            k: v for k, v in ((k, _special(v)) for k, v in config.items() if k.endswith("_token")) if v is not None
        }
        source = None
        if (path / "chat_template.jinja").is_file():
            source = (path / "chat_template.jinja").read_text()
        elif isinstance(config.get("chat_template"), str):
            source = config["chat_template"]
        elif isinstance(config.get("chat_template"), list):  # named templates: the default one
            source = next((t.get("template") for t in config["chat_template"] if t.get("name") == "default"), None)
        template, reads_tools = None, None
        if source:
            try:
                template = _compile_template(source)
                reads_tools = _reads(source, "tools")
            except Exception as exc:
                log.warning("chat template of %s does not compile here (%s): counting messages + overhead", folder, exc)
        tok = cls(str(path), backend, template, specials, None, None, reads_tools)
        # transformers adds BOS/EOS when the config says so even if tokenizer.json's post-processor does not
        probe = backend.encode("a", add_special_tokens=True).ids
        for flag, name in (("add_bos_token", "bos_token"), ("add_eos_token", "eos_token")):
            token_id = backend.token_to_id(specials[name]) if config.get(flag) and name in specials else None
            if token_id is not None and token_id not in probe:
                setattr(tok, "add_bos_id" if name == "bos_token" else "add_eos_id", token_id)
        return tok

    def encode_len(self, text: str, special: bool, batch: bool = False) -> int:
        """Tokens of ``text``; ``batch`` goes through ``encode_batch`` (releases the GIL: for worker threads)."""
        enc = (
            self.backend.encode_batch([text], add_special_tokens=special)[0]
            if batch
            else self.backend.encode(text, add_special_tokens=special)
        )
        n = len(enc.ids)
        if special:
            n += (self.add_bos_id is not None) + (self.add_eos_id is not None)
        return n

    def render(self, messages: list[dict], tools: list[dict] | None = None) -> str | None:
        """The chat prompt the engine builds (None when there is no usable template)."""
        if self.template is None:
            return None
        try:
            return self.template.render(
                messages=messages, tools=tools, documents=None, add_generation_prompt=True, **self.specials
            )
        except Exception as exc:
            log.warning("chat template of %s failed to render (%s): counting messages + overhead", self.folder, exc)
            return None


def _template_messages(messages: list[dict]) -> list[dict]:
    """Messages as the engines hand them to a chat template: tool-call arguments parsed back into objects
    (``transformers serve`` and SGLang both do; templates iterate them as mappings)."""
    if not any(m.get("tool_calls") for m in messages):
        return messages
    out = []
    for m in messages:
        if m.get("tool_calls"):
            calls = [
                {**c, "function": {**c["function"], "arguments": json.loads(c["function"]["arguments"])}}
                for c in m["tool_calls"]
            ]
            m = {**m, "tool_calls": calls}
        out.append(m)
    return out


class TokenCounter:
    """Counts prompts with the tokenizer of a folder, loaded once per folder (``max_tokenizers`` kept, LRU)."""

    def __init__(self, max_tokenizers: int = 8, inline_chars: int = 2000):
        self.max_tokenizers, self.inline_chars = max_tokenizers, inline_chars
        self._cache: OrderedDict[str, Tokenizer | None] = OrderedDict()
        self._lock = threading.Lock()
        self._loading: dict[str, asyncio.Future] = {}

    # -- loading ----------------------------------------------------------------------------------------------
    def _put(self, folder: str, tok: Tokenizer | None) -> None:
        with self._lock:
            self._cache[folder] = tok
            self._cache.move_to_end(folder)
            while len(self._cache) > self.max_tokenizers:
                self._cache.popitem(last=False)

    def cached(self, folder: str | None) -> tuple[bool, Tokenizer | None]:
        if not folder:
            return True, None
        with self._lock:
            if folder in self._cache:
                self._cache.move_to_end(folder)
                return True, self._cache[folder]
        return False, None

    def load(self, folder: str | None) -> Tokenizer | None:
        """The tokenizer of ``folder`` (loaded now if not cached; blocking). None when there is none: then the
        counts are the upper bound of the module docstring (a failed load is remembered, logged once)."""
        hit, tok = self.cached(folder)
        if hit:
            return tok
        try:
            tok = Tokenizer.load(folder)
        except Exception as exc:
            log.warning("no tokenizer in %s (%s): counting tokens by UTF-8 bytes (an upper bound)", folder, exc)
            tok = None
        self._put(folder, tok)
        return tok

    async def aload(self, folder: str | None) -> Tokenizer | None:
        """:meth:`load` off the event loop (one load per folder, however many requests wait for it)."""
        hit, tok = self.cached(folder)
        if hit:
            return tok
        future = self._loading.get(folder)
        if future is None:
            future = self._loading[folder] = asyncio.ensure_future(asyncio.to_thread(self.load, folder))
            future.add_done_callback(lambda _: self._loading.pop(folder, None))
        return await asyncio.shield(future)

    # -- counting ---------------------------------------------------------------------------------------------
    @staticmethod
    def _chat_bound(messages: list[dict], count, tools: list[dict] | None = None) -> int:
        """Messages' tokens + overheads (tool calls and definitions counted as their JSON)."""
        extra = [json.dumps(m["tool_calls"]) for m in messages if m.get("tool_calls")]
        extra += [json.dumps(tools)] if tools else []
        return (
            sum(count(m.get("content") or "") + count(m.get("role") or "") + MESSAGE_OVERHEAD for m in messages)
            + sum(count(text) for text in extra)
            + MESSAGE_OVERHEAD
        )

    def count_with(
        self,
        tok: Tokenizer | None,
        *,
        prompt: str | None = None,
        messages: list[dict] | None = None,
        tools: list[dict] | None = None,
        batch: bool = False,
    ) -> int:
        """Prompt tokens of a completion ``prompt`` or of chat ``messages`` (``[{"role", "content"}]``) with
        the function definitions ``tools`` (rendered by the template as the engine renders them)."""
        if messages is None:
            return tok.encode_len(prompt or "", True, batch) if tok else utf8_upper_bound(prompt or "")
        if tok is None:
            return self._chat_bound(messages, utf8_upper_bound, tools)
        rendered = tok.render(_template_messages(messages), tools)
        if rendered is None:
            return self._chat_bound(messages, lambda text: tok.encode_len(text, False, batch), tools)
        return tok.encode_len(rendered, False, batch)

    def count(
        self,
        folder: str | None,
        *,
        prompt: str | None = None,
        messages: list[dict] | None = None,
        tools: list[dict] | None = None,
    ) -> int:
        """Blocking :meth:`acount` (loads the tokenizer if needed)."""
        return self.count_with(self.load(folder), prompt=prompt, messages=messages, tools=tools)

    async def acount(
        self,
        folder: str | None,
        *,
        prompt: str | None = None,
        messages: list[dict] | None = None,
        tools: list[dict] | None = None,
    ) -> int:
        """Prompt tokens as the engine serving ``folder``'s tokenizer counts them; a long prompt (or a tokenizer
        not loaded yet) is handled in a worker thread."""
        tok = await self.aload(folder)
        chars = len(prompt or "") if messages is None else sum(len(m.get("content") or "") for m in messages)
        chars += len(json.dumps(tools)) if tools else 0
        if chars <= self.inline_chars:
            return self.count_with(tok, prompt=prompt, messages=messages, tools=tools)
        return await asyncio.to_thread(self.count_with, tok, prompt=prompt, messages=messages, tools=tools, batch=True)

    def count_output(self, folder: str | None, text: str) -> int:
        """Tokens of generated ``text`` (no special tokens), for a response without the engine's usage; uses the
        tokenizer only if it is loaded already (else the upper bound)."""
        _, tok = self.cached(folder)
        return tok.encode_len(text, False) if tok else utf8_upper_bound(text) - SPECIAL_ALLOWANCE
