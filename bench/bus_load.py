#!/usr/bin/env python3
"""Load on kdumpd's bus API: N concurrent clients x M calls while the state keeps changing.

Each client is its own bus connection and mixes Properties.Get (State, Armed), Properties.GetAll
and Describe(); meanwhile one more client arms and disarms over and over, so every read races a
change and PropertiesChanged flows. At the end every client disconnects and the bus must be back
to the connections it had before (nothing leaked by kdumpd or the bus).

    .venv/bin/python bench/bus_load.py                  # own private bus + kdumpd on a fake machine
    .venv/bin/python bench/bus_load.py --clients 50 --calls 200

Prints calls/s, latency percentiles, failures, leaked connections and the daemon's RSS.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from dbus_fast import BusType, Message, MessageType, Variant
from dbus_fast.aio import MessageBus

REPO = Path(__file__).resolve().parent.parent
BUS_NAME = "org.kdumpd.Kdump1"
PATH = "/org/kdumpd/Kdump1"
MANAGER = "org.kdumpd.Kdump1.Manager"
PROPS = "org.freedesktop.DBus.Properties"


@dataclass
class Result:
    calls: int = 0
    failures: list[str] = field(default_factory=list)
    latencies: list[float] = field(default_factory=list)
    changes: int = 0
    seconds: float = 0.0
    connections_before: int = 0
    connections_after: int = 0

    @property
    def leaked(self) -> int:
        return self.connections_after - self.connections_before

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else 0.0


def _call(
    interface: str, member: str, signature: str = "", body: list[object] | None = None
) -> Message:
    return Message(
        destination=BUS_NAME,
        path=PATH,
        interface=interface,
        member=member,
        signature=signature,
        body=body or [],
    )


def _requests(i: int) -> Message:
    kind = i % 4
    if kind == 0:
        return _call(MANAGER, "Describe")
    if kind == 3:
        return _call(PROPS, "GetAll", "s", [MANAGER])
    return _call(PROPS, "Get", "ss", [MANAGER, "State" if kind == 1 else "Armed"])


async def _connect(address: str) -> MessageBus:
    return await MessageBus(bus_address=address, bus_type=BusType.SYSTEM).connect()


async def _client(address: str, calls: int, result: Result) -> None:
    bus = await _connect(address)
    try:
        for i in range(calls):
            start = time.perf_counter()
            reply = await bus.call(_requests(i))
            result.latencies.append(time.perf_counter() - start)
            result.calls += 1
            if reply is None or reply.message_type == MessageType.ERROR:
                result.failures.append(f"{_requests(i).member}: {reply and reply.body}")
    finally:
        bus.disconnect()


async def _changer(address: str, stop: asyncio.Event, result: Result) -> None:
    bus = await _connect(address)
    options = {"enable": Variant("b", False)}
    try:
        while not stop.is_set():
            for member, body in (
                ("Arm", [options]),
                ("Disarm", [{"disable": Variant("b", False)}]),
            ):
                reply = await bus.call(_call(MANAGER, member, "a{sv}", body))
                if reply is None or reply.message_type == MessageType.ERROR:
                    result.failures.append(f"{member}: {reply and reply.body}")
                result.changes += 1
    finally:
        bus.disconnect()


async def _connection_count(address: str) -> int:
    bus = await _connect(address)
    try:
        reply = await bus.call(
            Message(
                "org.freedesktop.DBus", "/org/freedesktop/DBus", "org.freedesktop.DBus", "ListNames"
            )
        )
        assert reply is not None
        # Minus this very connection.
        return sum(1 for n in reply.body[0] if n.startswith(":")) - 1
    finally:
        bus.disconnect()


async def run_load(address: str, clients: int, calls: int) -> Result:
    result = Result()
    result.connections_before = await _connection_count(address)
    stop = asyncio.Event()
    changer = asyncio.ensure_future(_changer(address, stop, result))
    start = time.perf_counter()
    await asyncio.gather(*(_client(address, calls, result) for _ in range(clients)))
    result.seconds = time.perf_counter() - start
    stop.set()
    await changer
    # The bus drops a closed connection asynchronously: give it a moment.
    for _ in range(50):
        result.connections_after = await _connection_count(address)
        if result.connections_after <= result.connections_before:
            break
        await asyncio.sleep(0.05)
    return result


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=50)
    parser.add_argument("--calls", type=int, default=200)
    args = parser.parse_args()
    sys.path[:0] = [str(REPO / "tests/integration/service"), str(REPO / "tests/unit")]
    from busenv import _stop, start_bus, start_kdumpd
    from machines import build_machine

    root = Path(tempfile.mkdtemp(prefix="kdumpd-bench-"))
    build_machine(root, loaded=False)
    bus = start_bus()
    daemon = start_kdumpd(bus, root)
    try:
        rss_before = rss_kib(daemon.pid)
        result = asyncio.run(run_load(bus.address, args.clients, args.calls))
        rss_after = rss_kib(daemon.pid)
    finally:
        _stop(daemon)
        bus.close()
        shutil.rmtree(root, ignore_errors=True)
        shutil.rmtree(bus.directory, ignore_errors=True)
    ms = [x * 1000 for x in result.latencies]
    print(f"clients x calls      {args.clients} x {args.calls} = {result.calls} calls")
    print(f"state changes        {result.changes} (Arm/Disarm while reading)")
    print(f"failed calls         {len(result.failures)}")
    print(f"leaked connections   {result.leaked}")
    print(f"throughput           {result.calls / result.seconds:.0f} calls/s")
    p99 = result.percentile(0.99) * 1000
    print(
        f"latency ms           median {statistics.median(ms):.2f}  p99 {p99:.2f}  max {max(ms):.2f}"
    )
    print(
        f"daemon RSS           {rss_before / 1024:.1f} MiB before, {rss_after / 1024:.1f} MiB after"
    )
    for failure in result.failures[:5]:
        print(f"  failure: {failure}")
    return 0 if not result.failures and result.leaked <= 0 else 1


if __name__ == "__main__":
    sys.exit(main())
