"""``python -m pipeline.validation.worker REQUEST REPLY``: validate one dataset in a process
of its own (started by the validate stage on PostgreSQL, one per dataset, a few at a time).

A plain subprocess rather than ``multiprocessing``: Airflow's Celery workers run tasks in
daemonic processes, which ``multiprocessing`` does not allow to have children. REQUEST is a
pickle of the keyword arguments of :func:`pipeline.validation.validate_in_worker`; REPLY
gets ``("ok", {dataset: result})`` or ``("error", exception)`` (the first that raised).
"""

from __future__ import annotations

import logging
import pickle
import sys
from pathlib import Path


def main(argv: list[str]) -> int:
    request_path, reply_path = (Path(a) for a in argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    request = pickle.loads(request_path.read_bytes())
    from pipeline.validation import validate_in_worker

    try:
        reply: tuple = ("ok", validate_in_worker(**request))
    except Exception as error:  # handed to the stage, which raises it
        reply = ("error", error)
    try:
        data = pickle.dumps(reply)
    except Exception:  # an exception that does not pickle: keep its type and message
        error = reply[1]
        data = pickle.dumps(("error", RuntimeError(f"{type(error).__name__}: {error}")))
    reply_path.write_bytes(data)
    return 0 if reply[0] == "ok" else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
