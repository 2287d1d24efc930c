"""The disk buffer: frames, recovery, damaged parts set aside; and kill -9 with batches in it."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson
import pytest

from pipelines.buffer import HEAD, BufferedSink, DiskBuffer, decode_batch, encode_batch
from pipelines.errors import FatalSinkError, RetriableSinkError
from pipelines.records import Batch, Segment
from tests.conftest import CollectSink

pytestmark = pytest.mark.timeout(120)


def batch(seq: int, n: int, key: str = "f") -> Batch:
    seg = Segment(key, "/x.log", {"kubernetes": {"namespace": "ns"}})
    for i in range(n):
        seg.records.append(orjson.dumps({"message": f"b{seq} r{i}"}))
        seg.offsets.append(i * 10)
        seg.trace_ids.append("a" * 32 if i % 2 else None)
        seg.span_ids.append(None)
    seg.nbytes = sum(map(len, seg.records))
    seg.safe_offset = n * 10
    b = Batch(seq=seq)
    b.add(seg)
    return b


def messages(b: Batch) -> list[str]:
    return [orjson.loads(r)["message"] for r in b.iter_records()]


def test_batch_round_trip():
    b = batch(3, 5)
    back = decode_batch(encode_batch(b), seq=9)
    assert messages(back) == messages(b) and back.seq == 9
    s0, s1 = b.segments[0], back.segments[0]
    fields = ("file_key", "path", "meta", "offsets", "trace_ids", "span_ids", "nbytes", "safe_offset")
    assert [getattr(s1, f) for f in fields] == [getattr(s0, f) for f in fields]


def test_reopen_delivers_in_order_and_sets_damage_aside(tmp_path, caplog):
    buf = DiskBuffer(tmp_path)
    buf.open()
    frames = [buf.append(buf.compress(batch(i, 20))) for i in range(1, 6)]
    buf.mark_delivered(frames[0])
    buf.close()
    seg = frames[0].path
    data = bytearray(seg.read_bytes())
    f2 = frames[2]
    data[f2.offset + HEAD.size + 5] ^= 0xFF                  # a bit flip inside frame 3's payload
    data += HEAD.pack(b"TSB1", 1000, 0, 99) + b"torn"         # a write cut short by a crash
    seg.write_bytes(bytes(data))
    again = DiskBuffer(tmp_path)
    again.open()
    assert [f.id for f in again.frames] == [2, 4, 5]          # 1 delivered, 3 damaged
    assert again.corrupt == 2
    assert len(list((tmp_path / "corrupt").iterdir())) == 2
    assert "set aside" in caplog.text
    got = [messages(b) for f in again.frames if (b := again.read(f)) is not None]
    assert got == [messages(batch(i, 20)) for i in (2, 4, 5)]
    assert again.next_id == 6                                 # after the last intact id


async def test_buffered_sink_absorbs_an_outage_and_delivers_in_order(tmp_path):
    inner = CollectSink()
    inner.down = True
    sink = BufferedSink(inner, tmp_path / "buf", max_bytes=1 << 30, retry_initial_secs=0.01,
                        retry_max_secs=0.05)
    await sink.start()
    for i in range(1, 8):
        await asyncio.wait_for(sink.send(batch(i, 10)), 5)    # on_write: returns while the sink is down
    assert inner.records == [] and sink.bytes > 0
    inner.down = False
    await asyncio.wait_for(sink.close(10), 15)
    assert [r["message"] for r in inner.records] == [m for i in range(1, 8) for m in messages(batch(i, 10))]
    assert not list((tmp_path / "buf").glob("seg-*.tsb")) or sink.buf.pending == 0


async def test_the_daemons_buffer_tries_a_refused_sink_again_and_the_disk_holds_the_batches(tmp_path):
    """retry_refused (the daemon): the inner sink refuses for good on send (FatalSinkError) and at
    its first start; the buffer opens once, takes batches to disk, keeps trying the sink (its
    `refusal` telling readiness) and delivers everything in order once the sink accepts."""
    class Refusing(CollectSink):
        refuse = True
        starts = 0

        async def start(self) -> None:
            self.starts += 1
            if self.starts == 1:
                raise FatalSinkError("collect", "credentials refused at start")

        async def send(self, b: Batch) -> None:
            if self.refuse:
                self.attempts += 1
                raise FatalSinkError("collect", "credentials refused")
            await super().send(b)

    inner = Refusing()
    sink = BufferedSink(inner, tmp_path / "buf", max_bytes=1 << 30, retry_initial_secs=0.01,
                        retry_max_secs=0.05, retry_refused=True)
    with pytest.raises(FatalSinkError):
        await sink.start()
    await sink.start()  # tried again (as the daemon's delivery does): the buffer is opened once
    for i in range(1, 4):
        await asyncio.wait_for(sink.send(batch(i, 5)), 5)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 10
    while inner.attempts < 3:
        assert loop.time() < deadline, "the refused sink was not tried again"
        await asyncio.sleep(0.01)
    assert sink.refusal is not None and sink.refusal.current is not None
    inner.refuse = False
    await asyncio.wait_for(sink.close(15), 20)
    assert [r["message"] for r in inner.records] == [m for i in range(1, 4) for m in messages(batch(i, 5))]
    assert sink.refusal.current is None


async def test_full_buffer_blocks_or_drops(tmp_path):
    inner = CollectSink()
    inner.down = True
    size = len(DiskBuffer(tmp_path / "probe").compress(batch(1, 200))) + HEAD.size
    full = BufferedSink(inner, tmp_path / "a", max_bytes=2 * size + 10, retry_initial_secs=0.01)
    await full.start()
    await full.send(batch(1, 200))
    await full.send(batch(2, 200))
    blocked = asyncio.create_task(full.send(batch(3, 200)))
    await asyncio.sleep(0.2)
    assert not blocked.done()                                  # block: waits for room
    inner.down = False
    await asyncio.wait_for(blocked, 10)
    await full.close(10)
    assert len(inner.records) == 600

    inner2 = CollectSink()
    inner2.down = True
    counted: list[tuple[str, int]] = []
    drop = BufferedSink(inner2, tmp_path / "b", max_bytes=2 * size + 10, when_full="drop_newest",
                        retry_initial_secs=0.01, count=lambda name, n: counted.append((name, n)))
    await drop.start()
    for i in range(1, 5):
        await asyncio.wait_for(drop.send(batch(i, 200)), 5)  # never blocks
    assert drop.dropped == 400 and ("dropped_buffer_full", 200) in counted
    inner2.down = False
    await drop.close(10)
    assert len(inner2.records) == 400


async def test_on_delivery_waits_for_the_sink(tmp_path):
    class Flaky(CollectSink):
        async def send(self, b: Batch) -> None:
            if self.attempts < 2:
                self.attempts += 1
                raise RetriableSinkError(self.name, "not yet")
            await super().send(b)

    inner = Flaky()
    sink = BufferedSink(inner, tmp_path, max_bytes=1 << 20, ack="on_delivery", retry_initial_secs=0.01)
    await sink.start()
    await asyncio.wait_for(sink.send(batch(1, 3)), 10)
    assert len(inner.records) == 3                             # returned only after delivery
    await sink.close(5)


def _config(tmp_path: Path, log: Path) -> Path:
    cfg = tmp_path / "agent.toml"
    cfg.write_text(f'''data_dir = "{tmp_path / 'data'}"
workers = 1  # one process: the test looks into its buffer directory
checkpoint_interval_secs = 0.05
[source]
include = ["{log}"]
scan_interval_secs = 0.1
poll_interval_ms = 20
[batch]
max_records = 500
linger_ms = 20
[sink]
type = "stdout"
[buffer]
type = "disk"
[metrics]
listen = ""
''')
    return cfg


def test_kill_9_with_batches_in_the_buffer_then_a_damaged_frame(tmp_path):
    """Run 1 ships to a stdout nobody reads (the sink blocks): batches pile up in the disk buffer
    and checkpoints move past them (ack on_write). kill -9. A bit is flipped in one buffered
    frame. Run 2 (--once) delivers the buffered batches first: every line arrives except those of
    the damaged frame, which is set aside with a warning and counted."""
    log = tmp_path / "app.log"
    total = 30000
    log.write_text("".join(f"line {i} {'p' * 300}\n" for i in range(total)))
    cfg = _config(tmp_path, log)
    buf = tmp_path / "data" / "buffer"
    run1 = subprocess.Popen([sys.executable, "-m", "agent", "run", "--config", str(cfg)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        ck = tmp_path / "data" / "checkpoints.json"
        while time.monotonic() < deadline:  # the whole file acknowledged into the buffer
            if ck.exists() and any(e["offset"] == log.stat().st_size
                                   for e in orjson.loads(ck.read_bytes())["files"].values()):
                break
            time.sleep(0.05)
        else:
            pytest.fail("run 1 never checkpointed the whole file into the buffer")
        os.kill(run1.pid, signal.SIGKILL)
        run1.wait(timeout=30)
    finally:
        if run1.poll() is None:
            run1.kill()
    assert run1.stdout is not None
    first = run1.stdout.read()  # what reached the pipe before the writer blocked
    run1.stdout.close()
    segs = sorted(buf.glob("seg-*.tsb"))
    assert segs, "nothing in the disk buffer"
    reader = DiskBuffer(buf)
    reader.open()
    assert len(reader.frames) >= 3, "too few batches buffered to test with"
    damaged = reader.frames[len(reader.frames) // 2]
    lost = {m.split()[1] for m in messages(reader.read(damaged))}  # type: ignore[arg-type]
    reader.close()
    data = bytearray(damaged.path.read_bytes())
    data[damaged.offset + HEAD.size + 20] ^= 0x40
    damaged.path.write_bytes(bytes(data))
    run2 = subprocess.run([sys.executable, "-m", "agent", "run", "--config", str(cfg), "--once"],
                          capture_output=True, timeout=120)
    assert run2.returncode == 0, run2.stderr.decode()[-2000:]
    complete = first[: first.rfind(b"\n") + 1]  # the killed writer may have left half a line
    got = [orjson.loads(x)["message"].split()[1] for x in (complete + run2.stdout).splitlines()]
    assert set(got) == {str(i) for i in range(total)} - lost
    assert lost and not lost & set(got)
    err = run2.stderr.decode()
    assert "set aside" in err and "buffer_corrupt=1" in err
    assert list((buf / "corrupt").iterdir())
