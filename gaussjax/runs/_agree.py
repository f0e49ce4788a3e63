"""One verdict for every process of a job: the error of the first process that has one."""

from __future__ import annotations

import jax
import numpy as np
from jax.experimental import multihost_utils

from gaussjax._errors import InputTypeError

MESSAGE_BYTES = 4096  # of an error's message that travel (UTF-8)


def agree(error: Exception | None, kinds: tuple[type[Exception], ...]) -> Exception | None:
    """The error of the first process (by index) that has one, the same on every process; None if none has.

    A collective: every process of a `jax.distributed` job must call it, each with its own verdict
    (`error`, None for none; an instance of one of `kinds`). The process whose error wins gets its
    own error object back; every other process gets a new error of the first class in `kinds` that
    the winning error is an instance of, with its message (the first `MESSAGE_BYTES` bytes). In a
    single process `error` is returned as is. Typical use, so that every process raises together::

        failure = gaussjax.runs.agree(my_error, (FileNotFoundError, OSError))
        if failure is not None:
            raise failure

    Raises `TypeError` if `error` is none of `kinds`.
    """
    if error is not None and not isinstance(error, kinds):
        raise InputTypeError(f"`error` must be an instance of one of `kinds` {kinds}, got {type(error).__name__}")
    if jax.process_count() == 1:
        return error
    verdict = np.zeros(MESSAGE_BYTES + 1, np.uint8)  # [index of the class in `kinds` + 1 (0: none), message]
    if error is not None:
        verdict[0] = 1 + next(i for i, kind in enumerate(kinds) if isinstance(error, kind))
        message = str(error).encode()[:MESSAGE_BYTES]
        verdict[1 : 1 + len(message)] = np.frombuffer(message, np.uint8)
    verdicts = np.asarray(multihost_utils.process_allgather(verdict))  # (processes, MESSAGE_BYTES + 1)
    objecting = np.flatnonzero(verdicts[:, 0])
    if not len(objecting):
        return None
    first = int(objecting[0])
    if first == jax.process_index():
        return error
    message = verdicts[first, 1:].tobytes().rstrip(b"\0").decode(errors="replace")
    return kinds[verdicts[first, 0] - 1](message)
