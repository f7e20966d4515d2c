"""Entry point of a fresh re-scoring process: a cloudpickled job on stdin, the pickled result on
stdout (see ``arena.run.executors.rescore_in_subprocess``)."""

import pickle
import sys

from arena.run.executors import rescore_payload

if __name__ == "__main__":
    result = rescore_payload(sys.stdin.buffer.read())
    sys.stdout.buffer.write(pickle.dumps(result))
