"""A worker's reports go to the supervisor from a thread: with the supervisor not reading, the
sends return at once (the worker's loop never blocks on the pipe), a newer report replaces the
one waiting (counted), and once the supervisor reads it gets the report being sent and the
latest one."""

from __future__ import annotations

import multiprocessing
import threading

import pytest

from agent.supervisor.reports import ReportSender
from tests.conftest import wait_for

pytestmark = pytest.mark.timeout(30)

BIG = b"m" * (4 << 20)  # far more than a pipe holds: its send blocks until the other end reads


def test_sends_never_block_while_the_supervisor_does_not_read():
    supervisor, worker = multiprocessing.Pipe()
    counted: list[tuple[str, int]] = []
    sender = ReportSender(worker, lambda event, n: counted.append((event, n)))
    sender.send(("report", 1, BIG))
    wait_for(lambda: not sender.waiting(), 10, "the first report taken by the sender's thread")
    sender.send(("report", 2, BIG))  # returns though the thread is stuck sending the first
    sender.send(("report", 3, BIG))  # replaces the second, still unsent
    assert sender.replaced == 1 and counted == [("report_replaced", 1)]
    got = [supervisor.recv()[1] for _ in range(2)]  # the supervisor reads again
    assert got == [1, 3]
    closing = threading.Thread(target=sender.close, args=(("report", "last", b""),))
    closing.start()
    assert supervisor.recv() == ("report", "last", b"")
    closing.join(10)
    assert not closing.is_alive() and sender.failed is None
    print(f"reports sent 4, received {len(got) + 1}, replaced {sender.replaced}")


def test_a_supervisor_gone_ends_the_sender():
    supervisor, worker = multiprocessing.Pipe()
    sender = ReportSender(worker)
    supervisor.close()
    sender.send(("report", 1, BIG))
    wait_for(lambda: sender.failed is not None, 10, "the send to fail")
    sender.close(("report", "last", b""))  # returns: nothing is sent any more
