"""The relay's partitioner must agree with the Kafka clients' default, or a pupil's events would
split across partitions depending on who produced them."""

from aiokafka.partitioner import DefaultPartitioner
from hypothesis import given
from hypothesis import strategies as st

from shared.outbox import partition_of


@given(key=st.text(min_size=1, max_size=20), count=st.integers(min_value=1, max_value=64))
def test_partition_of_matches_the_default_partitioner(key, count):
    partitions = list(range(count))
    assert partition_of(key, count) == DefaultPartitioner()(key.encode(), partitions, partitions)


def test_known_keys_spread_over_partitions():
    upns = [f"A80120002{n:04d}" for n in range(1000)]
    used = {partition_of(upn, 12) for upn in upns}
    assert used == set(range(12))
