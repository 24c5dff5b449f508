"""Issue 23, budgets: `loom extract --dry-run` plans the LLM calls without making any,
`--max-llm-tokens` stops the candidate functions when spent, and the OpenAI client keeps
to requests-per-minute / tokens-per-minute limits."""

from __future__ import annotations

import pytest
from test_extract_resume_answers import ATTRS, DOCS, ScriptedLLM

from apps.cli import main
from extraction import Evaporate
from extraction.budget import estimate_tokens, plan_run
from extraction.config import EvaporateConfig
from extraction.documents import load_folder
from toolkit.llm import LLM, Completion, OpenAILLM
from toolkit.llm.ratelimit import RateLimiter
from toolkit.llm_server import make_server


@pytest.fixture()
def folder(tmp_path):
    d = tmp_path / "docs"
    d.mkdir()
    for name, text in DOCS.items():
        (d / name).write_text(text)
    return d


def test_dry_run_plans_what_the_run_then_does(folder, tmp_path, monkeypatch, capsys) -> None:
    import toolkit.llm

    def no_llm(*a, **k):
        raise AssertionError("--dry-run must not load or call an LLM")

    monkeypatch.setattr(toolkit.llm, "get_llm", no_llm)
    out = tmp_path / "ws"
    assert main(["extract", str(folder), "--attributes", ",".join(ATTRS), "--dry-run",
                 "--out", str(out)]) == 0  # fmt: skip
    text = capsys.readouterr().out
    assert "no LLM was called" in text and "sample 4, 2 candidates" in text  # local auto sizes
    lines = {ln.split()[0]: ln.split() for ln in text.splitlines() if ln.strip()}
    assert lines["sample_direct"][1] == str(4 * len(ATTRS))
    assert lines["codegen"][1] == str(2 * len(ATTRS))
    assert not out.exists()  # no run was started
    # the plan's calls are the run's calls, and it plans prompts of the run's sizes
    docs, _ = load_folder(folder)
    cfg = EvaporateConfig(attributes=tuple(ATTRS))
    plan = plan_run(docs, cfg).set_index("stage")
    llm = ScriptedLLM()
    seen: dict[str, list] = {}
    with llm.observe(lambda stage, key, c: seen.setdefault(stage, []).append(c)):
        res = Evaporate(llm=llm, workspace=tmp_path / "w2", progress=False).run(
            folder, attributes=ATTRS
        )
    real = res.tokens.set_index("stage")
    sent = {"sample_direct": llm.generated[: 4 * len(ATTRS)],
            "codegen": llm.generated[4 * len(ATTRS) :]}  # fmt: skip
    for stage in ("sample_direct", "codegen"):
        assert real.loc[stage, "calls"] == plan.loc[stage, "calls"] == len(seen[stage])
        est = plan.loc[stage, "prompt_tokens"]
        got = sum(estimate_tokens(p) for p in sent[stage])  # the same count of the real prompts
        assert abs(est - got) <= 0.15 * got, (stage, est, got)
    # the schema stage is planned when no attributes are given; server URLs plan more
    plan = plan_run(docs, EvaporateConfig(), server=True).set_index("stage")
    assert plan.loc["schema", "calls"] == len(docs)  # sample_size 10 > 6 documents
    assert plan.loc["codegen", "calls"] == 8 * 10


def test_max_llm_tokens_stops_candidate_functions_and_says_so(folder, tmp_path) -> None:
    ev = Evaporate(llm=ScriptedLLM(), workspace=tmp_path / "ws", progress=False)
    free = ev.run(folder, attributes=ATTRS, sample_size=3, num_candidates=3)
    t = free.tokens.set_index("stage")
    direct = int(
        t.loc["sample_direct", "prompt_tokens"] + t.loc["sample_direct", "completion_tokens"]
    )
    assert "budget" not in free.report
    # budget left after the sample answers: one round (one function per attribute), then spent
    llm = ScriptedLLM()
    res = Evaporate(llm=llm, workspace=tmp_path / "ws2", progress=False).run(
        folder, attributes=ATTRS, sample_size=3, num_candidates=3, max_llm_tokens=direct + 1
    )
    b = res.report["budget"]
    assert b["llm_functions_planned"] == 3 * len(ATTRS)
    assert b["llm_functions_written"] == len(ATTRS)
    assert "budget spent" in b["message"] and "1 of" not in b["message"]
    assert res.functions["source"].eq("llm").sum() == len(ATTRS)
    full = free.report["llm_tokens"]["total"]
    assert direct < b["llm_tokens_used"] < full  # stopped after the first round of three
    # a budget spent by the sample answers: no LLM function at all, only labels / induced
    res = Evaporate(llm=ScriptedLLM(), workspace=tmp_path / "ws3", progress=False).run(
        folder, attributes=ATTRS, sample_size=3, num_candidates=3, max_llm_tokens=10
    )
    assert res.report["budget"]["llm_functions_written"] == 0
    assert res.table["city"].notna().all()  # the `City:` lines still carry the column


def test_cli_budget_flags(folder, tmp_path, capsys) -> None:
    assert main(["extract", str(folder), "--max-llm-tokens", "0"]) == 2
    assert "--max-llm-tokens" in capsys.readouterr().err
    assert main(["extract", str(folder), "--requests-per-minute", "10", "--dry-run"]) == 2
    assert "give --llm http" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["extract", str(folder), "--sample-size", "many"])
    assert "not a whole number or 'auto'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["extract", "--help"])
    help_text = " ".join(capsys.readouterr().out.split())
    for flag in ("--dry-run", "--max-llm-tokens", "--requests-per-minute", "--tokens-per-minute"):
        assert flag in help_text
    assert help_text.count("default: no limit") == 3


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, s: float) -> None:
        self.sleeps.append(s)
        self.now += s


def test_rate_limiter_buckets() -> None:
    clock = FakeClock()
    rl = RateLimiter(requests_per_minute=60, clock=clock, sleep=clock.sleep)
    for _ in range(60):  # one minute's allowance at once
        rl.acquire()
    assert clock.now == 0.0
    rl.acquire()
    assert clock.now == pytest.approx(1.0)  # then one a second
    clock = FakeClock()
    rl = RateLimiter(tokens_per_minute=1000, clock=clock, sleep=clock.sleep)
    rl.acquire(600)
    rl.acquire(600)  # 200 tokens short: 12 s at 1000 per minute
    assert clock.now == pytest.approx(12.0)
    rl.settle(600, 100)  # the server said 100: 500 given back
    rl.acquire(500)
    assert clock.now == pytest.approx(12.0)
    rl.acquire(5000)  # more than a minute's allowance: waits for a full bucket, not forever
    assert clock.now == pytest.approx(72.0)
    with pytest.raises(Exception, match="requests_per_minute=-1"):
        RateLimiter(requests_per_minute=-1)


class EchoLLM(LLM):
    """Test double served over HTTP (the client is what is tested): echoes the prompt."""

    name = "echo"

    def _generate(self, prompts, max_tokens, temperature, stop, seed, chat):
        return [Completion(p[-8:], 10, 2) for p in prompts]


def test_openai_client_waits_for_its_request_limit() -> None:
    srv = make_server(EchoLLM(cache=False), port=0)
    srv.start()
    try:
        url = f"http://127.0.0.1:{srv.server_port}/v1"
        client = OpenAILLM(url, cache=False, requests_per_minute=120, concurrency=4)
        assert client.limiter.rpm == 120
        clock = FakeClock()  # the same limit on a clock the test controls
        client.limiter = RateLimiter(120, clock=clock, sleep=clock.sleep)
        out = client.complete([f"prompt {i}" for i in range(125)], max_tokens=2)
        assert [c.text for c in out] == [f"prompt {i}"[-8:] for i in range(125)]
        assert clock.now == pytest.approx(2.5, abs=0.01)  # 5 beyond the 120 allowed: 0.5 s each
        fast = OpenAILLM(url, cache=False)
        assert not fast.limiter.active and fast.is_server
    finally:
        srv.shutdown()
