"""The ZMQ read loop on real sockets (tcp loopback): woken by the socket's FD, not by its safety
timer; every message handed over once, in order; the FD's reader removed when the loop ends."""

from __future__ import annotations

import asyncio

import anyio
import zmq

from bridge.adapters.zmq import Readable, read_batches


def _pair(ctx: zmq.Context) -> tuple[zmq.Socket, zmq.Socket]:
    sub = ctx.socket(zmq.SUB)
    sub.setsockopt(zmq.SUBSCRIBE, b"")
    port = sub.bind_to_random_port("tcp://127.0.0.1")
    pub = ctx.socket(zmq.PUB)
    pub.connect(f"tcp://127.0.0.1:{port}")
    return pub, sub


async def _joined(pub: zmq.Socket, sub: zmq.Socket) -> None:
    """Until a probe gets through (PUB/SUB drops what is sent before the subscription arrives)."""
    with anyio.fail_after(30):
        while True:
            pub.send_multipart([b"probe"])
            await anyio.sleep(0.05)
            try:
                sub.recv_multipart(zmq.NOBLOCK)
                return
            except zmq.Again:
                continue


async def _joined_and_drained(pub: zmq.Socket, sub: zmq.Socket) -> None:
    """``_joined``, then the probes still in flight arrive and are read: the socket is empty."""
    await _joined(pub, sub)
    await anyio.sleep(0.2)
    while sub.getsockopt(zmq.EVENTS) & zmq.POLLIN:
        sub.recv_multipart(zmq.NOBLOCK)


def _no_reader(fd: int) -> bool:
    """True when nothing watches ``fd`` on the running loop (``remove_reader`` found nothing)."""
    return not asyncio.get_running_loop().remove_reader(fd)


async def test_a_message_sent_while_waiting_wakes_the_reader_not_its_safety_timer() -> None:
    with zmq.Context() as ctx:
        pub, sub = _pair(ctx)
        try:
            await _joined_and_drained(pub, sub)
            with Readable(sub, safety_secs=3600) as readable:
                woken = anyio.Event()

                async def waiter() -> None:
                    await readable.wait()
                    woken.set()

                async with anyio.create_task_group() as tg:
                    tg.start_soon(waiter)
                    await anyio.sleep(0.2)
                    assert not woken.is_set()  # nothing was sent: it really waits
                    pub.send_multipart([b"ERROR:", b"{}"])
                    with anyio.fail_after(30):  # the safety timer would take an hour
                        await woken.wait()
                assert sub.recv_multipart(zmq.NOBLOCK) == [b"ERROR:", b"{}"]
            assert _no_reader(sub.getsockopt(zmq.FD))
        finally:
            pub.close(linger=0)
            sub.close(linger=0)


async def test_read_batches_hands_over_every_message_once_in_order_then_unwatches() -> None:
    got: list[bytes] = []
    with zmq.Context() as ctx:
        pub, sub = _pair(ctx)
        try:
            await _joined(pub, sub)
            async with anyio.create_task_group() as tg:

                def handler(messages: list[list[bytes]]) -> None:
                    got.extend(m[0] for m in messages if m[0] != b"probe")

                tg.start_soon(read_batches, sub, handler)
                for burst in range(20):  # bursts with pauses: the loop waits on the FD between
                    for i in range(50):
                        pub.send_multipart([b"%d" % (burst * 50 + i)])
                    await anyio.sleep(0.02)
                with anyio.fail_after(30):
                    while len(got) < 1000:
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
            assert got == [b"%d" % n for n in range(1000)]
            assert _no_reader(sub.getsockopt(zmq.FD))
        finally:
            pub.close(linger=0)
            sub.close(linger=0)


class _CountingReadable(Readable):
    """A ``Readable`` counting how often the loop ran its FD callback."""

    calls = 0

    def _on_fd(self) -> None:
        type(self).calls += 1
        super()._on_fd()


async def test_the_loop_does_not_spin_on_the_fd_while_nobody_reads() -> None:
    # asyncio's selector is level-triggered and libzmq keeps its FD readable until EVENTS or a
    # receive resets it: a callback that only set the event ran at every turn of the loop
    with zmq.Context() as ctx:
        pub, sub = _pair(ctx)
        try:
            await _joined_and_drained(pub, sub)
            _CountingReadable.calls = 0
            with _CountingReadable(sub, safety_secs=3600):
                for burst in range(10):  # messages wait, nobody reads them
                    for i in range(10):
                        pub.send_multipart([b"%d" % (burst * 10 + i)])
                    await anyio.sleep(0.03)
                await anyio.sleep(0.2)
                assert 1 <= _CountingReadable.calls <= 10  # was thousands
            assert sub.recv_multipart(zmq.NOBLOCK) == [b"0"]
        finally:
            pub.close(linger=0)
            sub.close(linger=0)


async def test_gather_secs_takes_what_arrives_during_the_pause_in_one_turn() -> None:
    chunks: list[list[bytes]] = []
    first = anyio.Event()
    with zmq.Context() as ctx:
        pub, sub = _pair(ctx)
        try:
            await _joined_and_drained(pub, sub)
            async with anyio.create_task_group() as tg:

                def handler(messages: list[list[bytes]]) -> None:
                    chunks.append([m[0] for m in messages])
                    first.set()

                tg.start_soon(read_batches, sub, handler, 2048, 0.01, None, 1.0)
                pub.send_multipart([b"0"])
                with anyio.fail_after(30):
                    await first.wait()
                for burst in range(5):  # within the reader's pause: no turn of their own
                    for i in range(10):
                        pub.send_multipart([b"%d" % (1 + burst * 10 + i)])
                    await anyio.sleep(0.02)
                with anyio.fail_after(30):
                    while sum(map(len, chunks)) < 51:
                        await anyio.sleep(0.01)
                tg.cancel_scope.cancel()
            # one turn of 50 = handler calls of 32 and 18 (bursts read as they came: 5 x 10)
            assert [len(c) for c in chunks] == [1, 32, 18]
            assert [m for c in chunks for m in c] == [b"%d" % n for n in range(51)]
        finally:
            pub.close(linger=0)
            sub.close(linger=0)
