"""Subprocess side of the multi-process store tests (run as a script, never collected by pytest).

    python worker.py write-fg  STORE_JSON ENTITY KEYS ROUNDS FG_ID   write rounds of one FG, print "done"
    python worker.py write-ack STORE_JSON ENTITY KEYS ROUND          write, print "ack ROUND", then hang
    python worker.py read-loop STORE_JSON ENTITY KEYS SECONDS        read until SECONDS pass, print counts

STORE_JSON is ``{"kind": …, "settings": {…}}`` for :func:`open_store`; KEYS is a count of keys ``k<i>``.
Blocks carry their round in the values (see ``make_block``), so readers can check what they see.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/, for the conftest it imports

from online_feature_store import formats
from online_feature_store.registry.model import Store
from online_feature_store.store import BlockWrite, open_store
from tests.store.conftest import META, make_block, make_entity


def main(argv: list[str]) -> None:
    cmd, store_json, label, n_keys, arg = argv[0], argv[1], argv[2], int(argv[3]), int(argv[4])
    spec = json.loads(store_json)
    store = open_store(Store("test", spec["kind"], spec["settings"]))
    entity = make_entity(label)
    keys = [(f"k{i}", "r") for i in range(n_keys)]
    if cmd == "write-fg":
        for rnd in range(1, arg + 1):
            store.write(entity, [BlockWrite(k, int(argv[5]), make_block(rnd)) for k in keys])
        print("done", flush=True)
    elif cmd == "write-ack":
        store.write(entity, [BlockWrite(k, fg, make_block(arg)) for k in keys for fg in (1, 2, 3)])
        print(f"ack {arg}", flush=True)
        time.sleep(3600)  # killed by the test
    elif cmd == "read-loop":
        reads = bad = 0
        deadline = time.monotonic() + arg
        while time.monotonic() < deadline:
            for row in store.read(entity, keys, [1, 2, 3]):
                for block in row:
                    if block:
                        values = [float(v) for v in formats.decode_block(META, block).values]
                        # a block is always whole: values i + round, for one round
                        if not all(values[i] - values[0] == i for i in range(len(values))):
                            bad += 1
            reads += 1
        print(json.dumps({"reads": reads, "bad": bad}), flush=True)
    store.close()


if __name__ == "__main__":
    main(sys.argv[1:])
