import pytest
import yaml

from avops.fleet_registry import RegistryError, load_registry
from tests.conftest import TINY_FLEET


def _write(tmp_path, data):
    p = tmp_path / "fleet.yaml"
    p.write_text(yaml.safe_dump(data))
    return p


def test_project_registry_has_the_demo_cohorts():
    reg = load_registry()
    assert len(reg.cohorts) >= 4
    assert len({c.soc for c in reg.cohorts}) >= 2 and len({c.model_year for c in reg.cohorts}) >= 2
    assert len({c.region for c in reg.cohorts}) >= 2
    for c in reg.cohorts:
        assert not set(c.id) & set(",|/")
        assert c.ecus and all(e.hardware_id and e.firmware for e in c.ecus)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d["cohorts"][0].update(id="orin/my2024"), "may not contain"),
        (lambda d: d["cohorts"][0].pop("dbc"), "missing field 'dbc'"),
        (lambda d: d["cohorts"][0].update(loggers=["pcap"]), "logger 'pcap'"),
        (lambda d: d["cohorts"][1].update(id=d["cohorts"][0]["id"]), "duplicate cohort"),
        (lambda d: d["cohorts"][0].update(vehicle_count="three"), "must be int"),
    ],
)
def test_invalid_registry_names_file_and_field(tmp_path, mutate, message):
    data = yaml.safe_load(yaml.safe_dump(TINY_FLEET))
    mutate(data)
    path = _write(tmp_path, data)
    with pytest.raises(RegistryError) as err:
        load_registry(path)
    assert message in str(err.value) and str(path) in str(err.value)
