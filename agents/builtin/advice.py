"""Recommendations for batching, reliability, retrieval pipelines and self-hosted GPUs (pure).

Each function takes the data step's figures (and the current model's catalogue
entry, when there is one) and returns recommendations in the optimization
step's format: ``title``, ``detail``, ``source``, and
``estimated_monthly_savings_usd`` only where a saving follows from the
figures. Numbers come from the figures or the catalogue; practice without a
catalogue figure says so in its ``source``.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from .catalogue import Catalogue, ModelEntry
from .data import fmt_money, fmt_tokens, fmt_usd

PRACTICE = "general practice (no catalogue figure)"
#: Status codes a retry can fix (when the catalogue does not say otherwise).
RETRYABLE = frozenset({408, 429, 500, 502, 503, 504, 529})
#: A 70B-parameter open model hosted by an API: the reference for the break-even
#: when the self-hosted model is not in the catalogue.
REFERENCE_OPEN_MODEL = "llama-3.1-70b"

Rec = dict[str, Any]


def _money(value: Any) -> str:
    if isinstance(value, Mapping) and isinstance(value.get("amount"), int | float):
        return fmt_money(float(value["amount"]), str(value.get("currency", "USD")))
    return "?"


# -- batching -------------------------------------------------------------------------


def batching(
    figures: Mapping[str, Any], entry: ModelEntry | None, catalogue: Catalogue
) -> list[Rec]:
    """The provider's batch discount on the share of traffic that can wait a day."""
    found = catalogue.batch_discounts.get(entry.provider) if entry is not None else None
    cost = figures.get("monthly_cost_usd")
    if found is None or entry is None:
        return [
            {
                "title": "Batch work that can wait",
                "detail": "Requests that need no answer at once (reports, evaluations, "
                "back-fills) can go through a provider's batch API, typically at a discount "
                "with results within 24 hours; check whether your provider offers one.",
                "source": PRACTICE,
            }
        ]
    discount, source = found
    detail = (
        f"{catalogue.provider_name(entry.provider)}'s batch API bills {discount * 100:g}% below "
        "list prices for jobs whose results may take up to 24 hours."
    )
    rec: Rec = {"title": "Send work that can wait to the batch API", "detail": detail}
    if isinstance(cost, int | float) and cost > 0:
        per_tenth = Decimal(repr(cost)) * Decimal(repr(discount)) / 10
        rec["detail"] += (
            f" Of your {fmt_usd(cost)} a month on {entry.id}, every 10% of traffic moved to "
            f"batches saves {fmt_usd(float(per_tenth))} a month "
            f"({fmt_usd(float(per_tenth * 10))} if all of it can wait)."
        )
        rec["assumption"] = "the share of traffic that can wait a day is yours to choose"
    rec["source"] = catalogue.cite_source(source, catalogue.batch_dated.as_of)
    return [rec]


# -- reliability ----------------------------------------------------------------------


def _fallback_model(entry: ModelEntry | None, catalogue: Catalogue) -> ModelEntry | None:
    """The cheapest model of the same tier from another provider."""
    if entry is None:
        return None
    pool = [m for m in catalogue.models if m.tier == entry.tier and m.provider != entry.provider]
    pool.sort(key=lambda m: (m.input_per_million + m.output_per_million, m.id))
    return pool[0] if pool else None


def reliability(
    figures: Mapping[str, Any], entry: ModelEntry | None, catalogue: Catalogue
) -> list[Rec]:
    """What the status codes mean, retries with backoff and jitter, a queue, quotas, fallback."""
    facts = figures.get("reliability") or {}
    codes: Mapping[str, Mapping[str, Any]] = facts.get("status_codes") or {}
    numbers = {int(c) for c in codes if str(c).isdigit() and int(c) >= 400}
    error_rate = facts.get("error_rate_pct")
    out: list[Rec] = []
    failures = {c: i for c, i in codes.items() if str(c).isdigit() and int(c) >= 400}
    if failures:
        meanings = []
        for code, info in failures.items():
            meaning = info.get("meaning", "an HTTP status")
            retry = "worth retrying" if info.get("retry", int(code) in RETRYABLE) else "not retried"
            meanings.append(f"{code}: {meaning} ({retry})")
        references = sorted({str(i["reference"]) for i in failures.values() if i.get("reference")})
        out.append(
            {
                "kind": "finding",
                "title": "What the status codes say",
                "detail": "; ".join(meanings)
                + ". These are failures to handle, not slow responses: they say nothing about "
                "latency.",
                "source": "; ".join(references) or PRACTICE,
            }
        )
    rate_limited = 429 in numbers
    retryable = bool(numbers & RETRYABLE) or error_rate is not None or not numbers
    if retryable:
        out.append(
            {
                "title": "Retry with exponential backoff and jitter",
                "detail": "Retry 429, 5xx and 529 answers (never 400, 401 or 403) up to 3-5 "
                "times, waiting min(8 s, 0.5 s x 2^attempt) stretched by a random jitter, so "
                "clients do not retry in lockstep; honour the Retry-After header when the API "
                "sends one, and give each request an idempotency key if it has side effects.",
                "source": catalogue.cite_source("openai_rate_limits", catalogue.status_dated.as_of),
            }
        )
    if rate_limited:
        out.append(
            {
                "title": "Queue requests under your rate limits",
                "detail": "Rate limits count requests per minute and tokens per minute: put "
                "a client-side queue in front of the API and release requests with a token "
                "bucket sized to both, so bursts wait in your queue instead of failing, and "
                "spread batch jobs over the day.",
                "source": catalogue.cite_source("openai_rate_limits", catalogue.status_dated.as_of),
            }
        )
        out.append(
            {
                "title": "Check the quota and the usage tier",
                "detail": "A 429 that says the quota is exceeded is the account's spending "
                "limit, not the rate: raise the limit; higher usage tiers also raise the rate "
                "limits. Ask the provider for more capacity if the tier is not enough.",
                "source": catalogue.cite_source("openai_rate_limits", catalogue.status_dated.as_of),
            }
        )
    if numbers & {500, 502, 503, 504, 529} or error_rate is not None or not rate_limited:
        other = _fallback_model(entry, catalogue)
        target = (
            f" such as {other.id} ({catalogue.provider_name(other.provider)}, "
            f"same tier as {entry.id})"
            if other is not None and entry is not None
            else ""
        )
        detail = (
            "When retries are used up, or the provider answers 503 or 529 (overloaded), send "
            f"the request to a fallback model from another provider{target}, behind a circuit "
            "breaker that stops calling a failing provider for a minute; test the fallback's "
            "answers on an evaluation set first."
        )
        if isinstance(error_rate, int | float):
            detail = f"{error_rate:g}% of requests fail today. " + detail
        out.append(
            {
                "title": "Add a fallback provider",
                "detail": detail,
                "source": catalogue.cite(other) if other is not None else PRACTICE,
            }
        )
    if facts.get("timeout_rate_pct") is not None or facts.get("timeout_ms") is not None:
        out.append(
            {
                "title": "Set timeouts from your latency, and stream",
                "detail": "Use a short connect timeout (a few seconds) and a read timeout "
                "from your p99 rather than one long request timeout; stream responses so a "
                "stalled stream is seen early, and retry a timeout once with backoff.",
                "source": PRACTICE,
            }
        )
    return out


# -- retrieval pipelines ----------------------------------------------------------------


def retrieval(figures: Mapping[str, Any], entities: Mapping[str, Any]) -> list[Rec]:
    """A slow retrieval-augmented pipeline: the retrieval step and the context first."""
    found = next(
        (
            m
            for m in entities.get("metrics") or ()
            if isinstance(m, Mapping)
            and m.get("name") in ("context_length", "input_tokens_per_request")
        ),
        {},
    )
    context, chunks, per_chunk = (found.get(k) for k in ("value", "chunks", "tokens_per_chunk"))
    size = ""
    if isinstance(context, int | float):
        parts = (
            f" ({chunks:g} chunks x {fmt_tokens(float(per_chunk))} tokens)"
            if isinstance(chunks, int | float) and isinstance(per_chunk, int | float)
            else ""
        )
        size = (
            f" Your {fmt_tokens(float(context))} tokens of context{parts} are prefilled on "
            "every request."
        )
    return [
        {
            "title": "Time each step of the retrieval pipeline",
            "detail": "Measure embedding, vector search, reranking and generation separately at "
            "p95 and p99: in a RAG pipeline the tail often comes from the retrieval step "
            "(a cold index, a slow reranker, sequential calls) or from a long context, not "
            "from the model.",
            "source": PRACTICE,
        },
        {
            "title": "Retrieve less context",
            "detail": "Lower top-k after reranking (e.g. 20 chunks to 5-8), cap the context "
            "size and drop near-duplicate chunks: every 1k tokens of context adds prefill "
            f"time and cost.{size}",
            "source": PRACTICE,
        },
        {
            "title": "Run retrieval in parallel and cache it",
            "detail": "Embed the query once, run vector and keyword search in parallel, cache "
            "embeddings and frequent results, and give the reranker a time budget (or a "
            "smaller reranker) so one slow step cannot hold the whole answer.",
            "source": PRACTICE,
        },
    ]


# -- self-hosted GPUs --------------------------------------------------------------------


def _usd(value: Any, fallback: Any = None) -> float | None:
    if isinstance(value, Mapping) and value.get("currency") == "USD":
        amount = value.get("amount")
        return float(amount) if isinstance(amount, int | float) else None
    return float(fallback) if isinstance(fallback, int | float) else None


def self_hosting(
    figures: Mapping[str, Any], entry: ModelEntry | None, catalogue: Catalogue
) -> list[Rec]:
    """Idle time, right-sizing, batching, quantisation and the API break-even."""
    gpu = figures.get("gpu")
    out: list[Rec] = []
    if isinstance(gpu, Mapping):
        count, monthly = gpu.get("count"), gpu.get("monthly_cost")
        used = gpu.get("utilisation_pct")
        if isinstance(used, int | float):
            out.append(
                {
                    "kind": "finding",
                    "title": "Idle GPU time is most of the bill",
                    "detail": f"At {used:g}% utilisation, {100 - used:g}% of your {count} GPUs' "
                    f"hours are idle: {_money(gpu.get('idle_cost'))} of {_money(monthly)} a "
                    "month; each GPU-hour actually used costs "
                    f"{_money(gpu.get('cost_per_used_gpu_hour'))} instead of "
                    f"{_money(gpu.get('hourly'))}.",
                    "source": "computed from your figures",
                }
            )
        right = gpu.get("right_sized")
        if isinstance(right, Mapping):
            rec: Rec = {
                "title": "Right-size the fleet",
                "detail": f"The same load fits on {right['gpus']} GPUs at "
                f"{right['target_utilisation_pct']:g}% utilisation (headroom for peaks): "
                f"{_money(right.get('monthly_saving'))} a month less, if the model fits on "
                "each GPU and the load can be spread; autoscale with the traffic so GPUs are "
                "not paid for at night.",
                "assumption": "the load can be packed onto fewer GPUs at 70% utilisation",
                "source": "computed from your figures",
            }
            saving = _usd(right.get("monthly_saving"))
            if saving is not None:
                rec["estimated_monthly_savings_usd"] = saving
            out.append(rec)
    out += [
        {
            "title": "Batch requests on the GPU",
            "detail": "Serve with continuous batching (vLLM, TGI, TensorRT-LLM): many "
            "requests share each forward pass, so throughput per GPU rises several-fold at "
            "the same latency budget; it is the usual way from 20-30% to 60-70% utilisation.",
            "source": PRACTICE,
        },
        {
            "title": "Quantise the weights",
            "detail": "8-bit weights (FP8/INT8) need half the GPU memory of 16-bit ones and "
            "4-bit (AWQ, GPTQ) a quarter, so a model fits on fewer or smaller GPUs and serves "
            "more requests at once; check quality on an evaluation set before switching.",
            "source": PRACTICE,
        },
    ]
    out.append(_break_even(figures, entry, catalogue))
    return out


def _break_even(figures: Mapping[str, Any], entry: ModelEntry | None, catalogue: Catalogue) -> Rec:
    gpu = figures.get("gpu") if isinstance(figures.get("gpu"), Mapping) else {}
    assert isinstance(gpu, Mapping)
    gpu_usd = gpu.get("monthly_cost_usd")
    hosted = entry or catalogue.find(REFERENCE_OPEN_MODEL)
    title = "Compare with an API (break-even)"
    if hosted is None:
        return {
            "title": title,
            "detail": "Price the same tokens through an API.",
            "source": PRACTICE,
        }
    costs = figures.get("model_costs") or {}
    api = costs.get(hosted.id)
    reference = "" if entry is not None else f" ({hosted.id}, a hosted 70B open model)"
    if isinstance(api, int | float) and isinstance(gpu_usd, int | float):
        cheaper = "cheaper" if api < gpu_usd else "dearer"
        detail = (
            f"Your tokens through {hosted.id}'s API{reference} would cost {fmt_usd(api)} a "
            f"month against {fmt_usd(gpu_usd)} for the GPUs: the API is {cheaper} at this "
            "volume."
        )
    elif isinstance(gpu_usd, int | float):
        blended = Decimal("0.75") * Decimal(repr(hosted.input_per_million)) + Decimal(
            "0.25"
        ) * Decimal(repr(hosted.output_per_million))
        tokens = Decimal(repr(gpu_usd)) / blended * 1_000_000 if blended else Decimal(0)
        detail = (
            f"At {hosted.id}'s API list price{reference} ({fmt_usd(float(blended))} per 1M "
            f"tokens at 3:1 input/output), the break-even is about {fmt_tokens(float(tokens))} "
            f"tokens a month: below that, the API costs less than your {fmt_usd(gpu_usd)} of "
            "GPUs."
        )
    else:
        detail = (
            f"Price your monthly tokens at {hosted.id}'s API list price{reference} and compare "
            "with the GPU bill: below the break-even volume the API costs less."
        )
    return {"title": title, "detail": detail, "source": catalogue.cite(hosted)}
