import cProfile, pstats, trio, sys
from benchmarks.agent_worst_case import one_run, INPUTS
name = sys.argv[1]
text = INPUTS[name]()
trio.run(one_run, "warm up " + text[:100])
pr = cProfile.Profile(); pr.enable()
trio.run(one_run, text)
pr.disable()
pstats.Stats(pr).sort_stats("cumulative").print_stats(25)
