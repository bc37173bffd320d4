"""`python -m bench` (from the repository root): the epoch benchmark, bench_train.py.

    python -m bench                 # quick smoke run
    python -m bench --full          # batch 32,128,512 x float32,float64 (~5 min)
    python -m bench --batch 128 --dtype float32 --repeat 9    # any bench_train.py option
"""
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402

argv = sys.argv[1:]
if "--full" in argv:
    argv.remove("--full")
elif len(argv) == 0:
    argv = ["--quick"]
sys.argv = [bench_train.__file__] + argv     # workers re-run bench_train.py itself
sys.exit(bench_train.main(argv))
