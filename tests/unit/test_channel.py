"""The bounded fan-in between section workers and the run's consumer."""

from __future__ import annotations

import threading
import time

from backend_ai.streaming import StreamConfig
from backend_ai.streaming.channel import RunChannel
from backend_ai.streaming.events import ContentChunk, ErrorCode
from backend_ai.streaming.section_state import SectionState


def _state(name: str = "s") -> SectionState:
    return SectionState(config=StreamConfig(name, "p"))


def _chunks(n: int, start: int = 0) -> list[ContentChunk]:
    return [ContentChunk("s", i, str(i)) for i in range(start, start + n)]


class _Putter(threading.Thread):
    def __init__(self, channel: RunChannel, batch: list[ContentChunk], state: SectionState):
        super().__init__(daemon=True)
        self.channel, self.batch, self.state = channel, batch, state
        self.result: bool | None = None
        self.finished_at: float | None = None

    def run(self) -> None:
        self.result = self.channel.put_chunks(self.batch, self.state)
        self.finished_at = time.monotonic()


def test_items_come_out_in_order():
    channel = RunChannel(capacity=10, backpressure_timeout_s=1.0)
    state = _state()
    channel.put_control("start")
    assert channel.put_chunks(_chunks(2), state)
    channel.put_control("end")
    assert channel.get(0) == "start"
    assert channel.get(0) == _chunks(2)
    assert channel.get(0) == "end"
    assert channel.get(0) is None


def test_get_times_out_with_none():
    channel = RunChannel(capacity=1, backpressure_timeout_s=1.0)
    assert channel.get(0.01) is None


def test_in_flight_counts_chunks_until_the_consumer_takes_them():
    channel = RunChannel(capacity=10, backpressure_timeout_s=1.0)
    state = _state()
    channel.put_chunks(_chunks(3), state)
    channel.put_chunks(_chunks(2, 3), state)
    assert channel.in_flight == 5
    channel.get(0)
    assert channel.in_flight == 2
    channel.get(0)
    assert channel.in_flight == 0


def test_a_full_channel_blocks_the_worker_until_the_consumer_reads():
    channel = RunChannel(capacity=2, backpressure_timeout_s=30.0)
    state = _state()
    assert channel.put_chunks(_chunks(2), state)
    putter = _Putter(channel, _chunks(1, 2), state)
    putter.start()
    putter.join(0.2)
    assert putter.is_alive(), "the worker should wait for room"
    assert channel.in_flight == 2
    taken_at = time.monotonic()
    assert channel.get(0) == _chunks(2)
    putter.join(5)
    assert putter.result is True
    assert putter.finished_at is not None
    assert putter.finished_at >= taken_at
    assert channel.get(0) == _chunks(1, 2)
    assert state.cancel_code is None


def test_a_consumer_that_never_reads_ends_the_section_as_slow_consumer():
    channel = RunChannel(capacity=1, backpressure_timeout_s=0.1)
    state = _state()
    assert channel.put_chunks(_chunks(1), state)
    started = time.monotonic()
    assert channel.put_chunks(_chunks(1, 1), state) is False
    waited = time.monotonic() - started
    assert state.cancel_code is ErrorCode.SLOW_CONSUMER
    assert waited >= 0.1
    # The dropped batch never entered the channel.
    assert channel.in_flight == 1


def test_cancel_releases_a_waiting_worker():
    channel = RunChannel(capacity=1, backpressure_timeout_s=30.0)
    state = _state()
    channel.put_chunks(_chunks(1), state)
    putter = _Putter(channel, _chunks(1, 1), state)
    putter.start()
    putter.join(0.1)
    assert putter.is_alive()
    cancelled_at = time.monotonic()
    state.cancel(ErrorCode.CANCELLED)
    putter.join(5)
    assert putter.result is False
    assert putter.finished_at is not None
    # Released promptly, long before the backpressure timeout.
    assert putter.finished_at - cancelled_at < 1.0
    assert state.cancel_code is ErrorCode.CANCELLED


def test_a_cancelled_section_posts_nothing():
    channel = RunChannel(capacity=5, backpressure_timeout_s=1.0)
    state = _state()
    state.cancel(ErrorCode.TIMEOUT)
    assert channel.put_chunks(_chunks(1), state) is False
    assert channel.get(0) is None


def test_control_items_never_wait_for_room():
    channel = RunChannel(capacity=1, backpressure_timeout_s=30.0)
    state = _state()
    channel.put_chunks(_chunks(1), state)
    started = time.monotonic()
    for i in range(100):
        channel.put_control(i)
    assert time.monotonic() - started < 1.0
    assert channel.get(0) == _chunks(1)
    assert [channel.get(0) for _ in range(100)] == list(range(100))


def test_many_workers_never_exceed_capacity_plus_one_batch_each():
    capacity, workers, per_worker, batch = 4, 6, 60, 3
    channel = RunChannel(capacity=capacity, backpressure_timeout_s=30.0)
    states = [_state(f"s{i}") for i in range(workers)]
    peak = 0

    def produce(state: SectionState) -> None:
        for start in range(0, per_worker, batch):
            assert channel.put_chunks(_chunks(batch, start), state)
        channel.put_control(("end", state.name))

    threads = [threading.Thread(target=produce, args=(s,)) for s in states]
    for thread in threads:
        thread.start()
    ended = received = 0
    while ended < workers:
        peak = max(peak, channel.in_flight)
        item = channel.get(5)
        assert item is not None, "a producer is stuck"
        if isinstance(item, list):
            received += len(item)
        else:
            ended += 1
    for thread in threads:
        thread.join()
    assert received == workers * per_worker
    assert peak <= capacity + workers * batch
    assert channel.in_flight == 0
