"""The analyzer's format 3 (Hebrew and Arabic optional marks folded) against
format 2 on Latin text, in one run: ``index_terms`` (what a write analyses)
and ``tokens`` (queries, highlights) of the same 800 generated documents
(3,000 random words plus accented ones), the two formats alternating which
goes first, 25 rounds, CPU time (``process_time``: the machine is shared),
min and median ratio v3/v2. Warm: the per-word caches as a running process
has them; cold: cleared before each pass.

    python bench/analyzer_fold.py
"""

from __future__ import annotations

import random
import statistics
import time

from tenant_runtime import analyzer

rng = random.Random(7)
letters = "abcdefghijklmnopqrstuvwxyz"
vocab = ["".join(rng.choice(letters) for _ in range(rng.randint(3, 10))) for _ in range(800)]
vocab += ["café", "naïve", "crème", "brûlée", "Zürich", "São", "Ærø", "façade"] * 5
docs = [(" ".join(rng.choice(vocab) for _ in range(6)).title(),
         " ".join(rng.choice(vocab) for _ in range(rng.randint(40, 120)))) for _ in range(800)]
v2, v3 = analyzer.profile("v2"), analyzer.profile("v3")
assert v2 and v3 and v3.format == 3



def clear() -> None:
    analyzer.fold.cache_clear()
    analyzer.stem.cache_clear()
    for table in analyzer._LATIN.values():
        table.clear()


def run(prof: analyzer.Profile, what: str, cold: bool) -> float:
    if cold:
        clear()
    t = time.process_time()
    if what == "index":
        for title, body in docs:
            analyzer.index_terms(title, body, prof)
    else:
        for _title, body in docs:
            analyzer.tokens(body, index=True, prof=prof)
    return time.process_time() - t


for what in ("index", "tokens"):
    for cold in (False, True):
        res = {"v2": [], "v3": []}
        run(v2, what, False)
        run(v3, what, False)
        for r in range(25):
            order = [("v2", v2), ("v3", v3)] if r % 2 == 0 else [("v3", v3), ("v2", v2)]
            for name, prof in order:
                res[name].append(run(prof, what, cold))
        a, b = min(res["v2"]), min(res["v3"])
        ma, mb = statistics.median(res["v2"]), statistics.median(res["v3"])
        print(f"{what:6} {'cold' if cold else 'warm'}: v2 min {a*1000:.1f} ms, v3 min {b*1000:.1f} ms, "
              f"ratio min {b/a:.3f}, median {mb/ma:.3f}")
