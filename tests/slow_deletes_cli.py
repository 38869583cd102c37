"""Run bmxgc's CLI with every DeleteObjects answer delayed, to interrupt it mid-apply.

``python tests/slow_deletes_cli.py ARGS...`` is ``bmxgc ARGS...``, except
that after each DeleteObjects answer arrives (S3 has done the work) it writes
``DELETE-ANSWERED`` on stderr and waits 2 s before bmxgc sees the answer: a
test sends its signal then, while the request is in flight. Only S3 traffic
is slowed (a botocore hook on the clients bmxgc makes); bmxgc runs unchanged.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from bmxgc import s3
from bmxgc.cli import main

MARK = "DELETE-ANSWERED"
_real_make_client = s3.make_client


def _slowly_answered(**_kwargs: Any) -> None:
    sys.stderr.write(MARK + "\n")
    sys.stderr.flush()
    time.sleep(2)


def _make_client(*args: Any, **kwargs: Any) -> Any:
    client = _real_make_client(*args, **kwargs)
    client.meta.events.register("after-call.s3.DeleteObjects", _slowly_answered)
    return client


if __name__ == "__main__":
    s3.make_client = _make_client
    sys.exit(main(sys.argv[1:]))
