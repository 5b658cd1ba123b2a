import sys, trio, json
from benchmarks.answers import run_request, run_case
async def main():
    for t in sys.argv[1:]:
        r = await run_request(t)
        print("=====", t[:100]); print(r["supervisor"]["answer"])
trio.run(main)
