"""`python -m tuneforge.hosting`: one hosting replica process (launchers.ProcessHandle starts it).

stdin's first line: {"engine": EngineConfig fields, "authkey": hex}; stdout: the ["127.0.0.1", port]
it serves its ReplicaCore on (multiprocessing.managers, that key). It exits when stdin ends."""

from __future__ import annotations

import json
import logging
import os
import sys
import threading

from tuneforge.hosting.launchers import ReplicaManager
from tuneforge.hosting.replica import ReplicaCore


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = json.loads(sys.stdin.readline())
    core = ReplicaCore(settings["engine"])

    class Manager(ReplicaManager):
        pass

    Manager.register("replica", callable=lambda: core)
    server = Manager(address=("127.0.0.1", 0), authkey=bytes.fromhex(settings["authkey"])).get_server()
    print(json.dumps(list(server.address)), flush=True)

    def exit_with_parent() -> None:
        sys.stdin.read()  # returns when the server that started this process closes the pipe or dies
        os._exit(0)

    threading.Thread(target=exit_with_parent, name="parent-watch", daemon=True).start()
    server.serve_forever()


if __name__ == "__main__":
    main()
