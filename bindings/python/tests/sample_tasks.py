"""Functions run by workers in the tests, by reference ("sample_tasks:add")."""
import threading
import time

import apsd

calls = []
_lock = threading.Lock()


def add(a, b):
    return a + b


def boom(message):
    raise ValueError(message)


def record(*args, **kwargs):
    with _lock:
        calls.append((args, kwargs))
    return {"args": list(args), "kwargs": kwargs}


def slow(seconds):
    """Runs longer than its lease; returns whether it was cancelled."""
    run = apsd.current_run()
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        if run is not None and run.cancelled.is_set():
            return "cancelled"
        time.sleep(0.05)
    return "done after %s s" % seconds


def unjsonable():
    return object()


async def async_add(a, b):
    return a + b


class Greeter:
    @staticmethod
    def hello(name):
        return "hello " + name
