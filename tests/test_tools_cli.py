"""python -m apq_torch: the demo runs end to end; bad arguments exit with a usage error."""

import pytest

from apq_torch.tools.cli import main


def test_demo_runs_and_reports_exactness(capsys):
    assert main(["demo", "--size", "256", "--reps", "1", "--windows", "1", "--calib-windows", "2"]) == 0
    out = capsys.readouterr().out
    assert out.count("bit-exact") == 4 and "MISMATCH" not in out
    assert "x fp32 matmul" in out


@pytest.mark.parametrize("argv", [["nope"], ["eval", "--w-format", "int4"], ["mixed"]])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_bench_sweep_writes_table_csv_json_and_plot(tmp_path, capsys):
    prefix = str(tmp_path / "sweep")
    assert main(["bench", "--shapes", "8x16x300", "1x33x64", "--bits", "1,1", "8,4", "--reps", "1", "--out", prefix]) == 0
    out = capsys.readouterr().out
    assert "W4A8" in out and "vs int8" in out
    import json

    rows = json.load(open(prefix + ".json"))["rows"]
    assert len(rows) == 4 and all(r["seconds"] > 0 for r in rows)
    assert open(prefix + ".csv").readline().startswith("M,N,K,x_bits,w_bits")
    assert open(prefix + ".png", "rb").read(8) == b"\x89PNG\r\n\x1a\n"


def test_bench_rejects_bad_shapes(capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--shapes", "8x16", "--reps", "1"])
    assert "MxNxK" in capsys.readouterr().err
