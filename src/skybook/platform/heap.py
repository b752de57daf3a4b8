"""Keeping the cyclic garbage collector out of a long-running process's hot path.

Almost everything a request or an event allocates is freed by reference counting the moment it is
done with. The cyclic collector still runs a young-generation pass after every 700 net container
allocations (CPython's default), and every few of those a full pass over the whole heap. In a
server under load that was about 4 % of its CPU and, for the full passes, stalls of tens of
milliseconds (bench/booking.py with a gc callback: 1,319 young and 10 full collections in one
worker over a 15 s run, 7 % of that worker's CPU).
"""

from __future__ import annotations

import gc

# Net container allocations between young-generation collections. At this threshold the same run
# collected nothing at all: what requests allocate is freed long before 50,000 accumulate, and
# reference cycles (rare in this code) wait a little longer to be reclaimed.
YOUNG_THRESHOLD = 50_000

_settled = False


def settle_heap() -> None:
    """Once per process, when start-up is over: freeze what start-up built and collect rarely.

    The app, its routes and schemas, the SQLAlchemy metadata and the imported modules live as long
    as the process; frozen, a full collection no longer walks them (in the relay a full collection
    took 120 ms with 130,000 start-up objects, 7 ms frozen). Nothing is freed later than before:
    these objects never die.
    """
    global _settled
    if _settled:
        return
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_THRESHOLD, older, oldest)
    _settled = True
