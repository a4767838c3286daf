import pyarrow.parquet as pq
from click.testing import CliRunner

from avops.cli import main


def test_avops_can_decode_writes_one_parquet_per_message(tiny_home, tmp_path):
    logs = sorted(str(p) for p in (tiny_home.landing / "xavier-my2022-us").rglob("*") if p.suffix in (".asc", ".mf4"))
    assert len(logs) == 2
    out = tmp_path / "decoded"
    result = CliRunner().invoke(main, ["can", "decode", "--dbc", "opendbc:ford_lincoln_base_pt", *logs, "--out", str(out)])
    assert result.exit_code == 0, result.output
    files = sorted(p.name for p in out.glob("*.parquet"))
    assert "WheelSpeed.parquet" in files and "Battery_Traction_1_FD1.parquet" in files
    t = pq.read_table(out / "WheelSpeed.parquet")
    assert t.column_names == ["timestamp", "WhlFl_W_Meas", "WhlFr_W_Meas", "WhlRl_W_Meas", "WhlRr_W_Meas"]
    ts = t["timestamp"].to_numpy()
    assert (ts[1:] >= ts[:-1]).all() and t.num_rows > 500


def test_avops_can_decode_explains_a_bad_dbc(tmp_path):
    log = tmp_path / "x.blf"
    log.write_bytes(b"")
    result = CliRunner().invoke(main, ["can", "decode", "--dbc", "opendbc:no_such_car", str(log), "--out", str(tmp_path / "o")])
    assert result.exit_code != 0 and "no_such_car" in result.output


def test_cli_lists_the_demo_plugin_without_importing_dagster_for_other_commands():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0 and "demo" in result.output and "fleet" in result.output and "can" in result.output


def test_avops_query_runs_duckdb_over_published_tables(tiny_home, tiny_registry):
    from avops.ingest.ingest import ingest_partition

    ingest_partition(tiny_home, tiny_registry.cohort("orin-my2024-eu"))
    result = CliRunner().invoke(main, ["query", "--asset", "ingest/raw_drives", "--cohort", "orin-my2024-eu", "--home",
                                       str(tiny_home.root), "select format, count(*) as n from drives group by 1 order by 1"])
    assert result.exit_code == 0, result.output
    assert "blf" in result.output and "mcap" in result.output
    bad = CliRunner().invoke(main, ["query", "--asset", "ingest/raw_drives", "--cohort", "nope", "--home", str(tiny_home.root), "select 1"])
    assert bad.exit_code != 0 and "materialize it first" in bad.output
