"""Periodic workers (the casework and CME clock scans): a failed round never ends the worker, and
each completed round is recorded in `periodic_last_success_timestamp_seconds`, the metric that
alerts when scans stop (docs/runbook.md)."""

from __future__ import annotations

import asyncio
import time

import pytest
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from shared.app import periodic
from tests.conftest import eventually

METRIC = "periodic_last_success_timestamp_seconds"


async def test_a_failed_round_is_logged_and_the_next_one_runs_on_time():
    """Round 1 fails (the database away); rounds 2 and 3 still run. The last-success time is set
    only by a completed round."""
    seen_before_round: list[float | None] = []

    async def work() -> None:
        seen_before_round.append(REGISTRY.get_sample_value(METRIC, {"worker": "test_flaky"}))
        if len(seen_before_round) == 1:
            raise ConnectionRefusedError("database away")

    async def three_rounds() -> bool:
        return len(seen_before_round) >= 3

    stop = asyncio.Event()
    started = time.time()
    task = asyncio.create_task(periodic("test_flaky", 0.05, work)(stop))
    try:
        await eventually(three_rounds, "three rounds", timeout=5)
    finally:
        stop.set()
        await asyncio.wait_for(task, 2)
    assert seen_before_round[:2] == [None, None]  # the failed round recorded nothing
    assert seen_before_round[2] is not None and seen_before_round[2] >= started


@pytest.mark.parametrize("service", ["casework", "cme"])
async def test_clock_scans_report_their_last_completed_round(casework, cme, service):
    running = {"casework": casework, "cme": cme}[service]

    async def last_scan() -> float | None:
        async with running.client() as http:
            response = await http.get("/metrics")
        samples = [
            sample
            for family in text_string_to_metric_families(response.text)
            for sample in family.samples
            if sample.name == METRIC and sample.labels == {"worker": f"{service}_clock_scan"}
        ]
        return samples[0].value if samples else None

    first = await eventually(last_scan, f"a {service} clock scan round")
    # scans run every 0.5 s in the tests: the next round moves the time on
    await eventually(lambda: _later_than(last_scan, first), f"the next {service} clock scan round")
    assert time.time() - first < 60


async def _later_than(probe, previous: float) -> bool:
    value = await probe()
    return value is not None and value > previous
