import cProfile, pstats
from agents.builtin.triage import classify, extract_entities
from agents.builtin.triage._classify import classify_entities
from agents.builtin.triage._read import read_request
NORMAL = ("We send 40M input tokens and 10M output tokens a month to gpt-4o and our p95 latency "
    "is 1200 ms. How much would switching to gpt-4o-mini save? Target: cut cost by 30%.")
e = extract_entities(NORMAL)
for _ in range(200): classify_entities(NORMAL, e)
pr = cProfile.Profile(); pr.enable()
for _ in range(2000): classify_entities(NORMAL, e)
pr.disable()
pstats.Stats(pr).sort_stats("tottime").print_stats(12)
