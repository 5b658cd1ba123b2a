import cProfile, pstats, trio, time
from benchmarks.agent_worst_case import one_run, NORMAL
from agents.builtin.triage._read import read_request
async def many(n):
    for i in range(n):
        read_request.cache_clear()
        await one_run(NORMAL)
trio.run(many, 50)
t=time.process_time(); trio.run(many, 300); print("ms/run", (time.process_time()-t)/300*1000)
pr = cProfile.Profile(); pr.enable()
trio.run(many, 200)
pr.disable()
pstats.Stats(pr).sort_stats("tottime").print_stats(30)
st=pstats.Stats(pr); st.sort_stats("tottime").print_callers("method 'search'")
st.print_callers("finditer")
