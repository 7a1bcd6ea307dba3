"""Reading raw measurements: negative, NaN and infinite values are refused with one clear line."""

from __future__ import annotations

import json

import pytest

from sp_planner.calibration.measurements import read_measurements, write_measurements
from sp_planner.errors import UserInputError


def test_round_trip(make_measurements, tmp_path):
    path = tmp_path / "raw.json"
    measurements = make_measurements()
    write_measurements(path, measurements)
    assert read_measurements(path) == measurements


@pytest.mark.parametrize("value, message", [
    (-2e-3, "collectives.3.time_s: Input should be greater than 0"),
    (float("nan"), "collectives.3.time_s: Input should be a finite number"),
    (float("inf"), "collectives.3.time_s: Input should be a finite number"),
])
def test_bad_times_are_rejected(make_measurements, tmp_path, value, message):
    data = make_measurements().model_dump(mode="json")
    data["collectives"][3]["time_s"] = value
    path = tmp_path / "raw.json"
    path.write_text(json.dumps(data))  # json writes NaN / Infinity literals, as a careless tool would
    with pytest.raises(UserInputError) as err:
        read_measurements(path)
    assert message in str(err.value) and str(path) in str(err.value)
    assert "\n" not in str(err.value)


def test_negative_sizes_and_unknown_collectives_are_rejected(make_measurements, tmp_path):
    data = make_measurements().model_dump(mode="json")
    data["gemm"][0]["m"] = -4096
    data["collectives"][0]["collective"] = "broadcast"
    path = tmp_path / "raw.yaml"
    path.write_text(json.dumps(data))  # YAML is a superset of JSON
    with pytest.raises(UserInputError, match=r"collectives.0.collective: Input should be 'all_reduce'.*"
                                             r"gemm.0.m: Input should be greater than 0"):
        read_measurements(path)


def test_saved_byte_counts_are_whole_and_read_back(make_measurements, tmp_path):
    # A CPU rank's share of the host's memory need not be whole; the file holds whole bytes.
    path = tmp_path / "raw.json"
    write_measurements(path, make_measurements(device_memory_bytes=17179869184 / 3, runtime_reserved_bytes=1.5e9))
    environment = json.loads(path.read_text())["environment"]
    assert environment["device_memory_bytes"] == 5726623061 and type(environment["device_memory_bytes"]) is int
    assert environment["runtime_reserved_bytes"] == 1500000000
    assert type(environment["runtime_reserved_bytes"]) is int
    assert read_measurements(path).environment.device_memory_bytes == 5726623061.0
    write_measurements(path, make_measurements(runtime_reserved_bytes=None))
    assert json.loads(path.read_text())["environment"]["runtime_reserved_bytes"] is None


@pytest.mark.parametrize("environment, message", [
    # The fit would take 3 // 2 = 1 node and drop the third rank.
    ({"world_size": 3, "ranks_per_node": 2},
     "environment: world_size 3 is not a whole number of nodes of ranks_per_node 2"),
    ({"ranks_per_node": 8, "devices_per_node": 4},
     "environment: ranks_per_node 8 is more than the node's devices_per_node 4; NCCL runs one rank per GPU"),
])
def test_an_environment_of_part_nodes_is_refused(make_measurements, tmp_path, environment, message):
    data = make_measurements().model_dump(mode="json")
    data["environment"] |= environment
    path = tmp_path / "raw.json"
    path.write_text(json.dumps(data))
    with pytest.raises(UserInputError) as err:
        read_measurements(path)
    assert str(err.value).endswith(message) and str(path) in str(err.value)
