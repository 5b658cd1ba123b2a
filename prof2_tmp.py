import cProfile, pstats, sys, time
from benchmarks.agent_worst_case import INPUTS
from agents.builtin.triage import extract_entities
from agents.builtin.triage._read import read_request
name = sys.argv[1]
text = INPUTS[name]()
t=time.process_time(); extract_entities(text); print("first", (time.process_time()-t)*1000)
read_request.cache_clear()
pr = cProfile.Profile(); pr.enable()
extract_entities(text)
pr.disable()
pstats.Stats(pr).sort_stats("tottime").print_stats(15)
