"""python -m apq_torch: the demo runs end to end; bad arguments exit with a usage error."""

import pytest

from apq_torch.__main__ import main


def test_demo_runs_and_reports_exactness(capsys):
    assert main(["demo", "--size", "256", "--reps", "1"]) == 0
    out = capsys.readouterr().out
    assert out.count("bit-exact") == 4 and "MISMATCH" not in out
    assert "x fp32 matmul" in out


@pytest.mark.parametrize("argv", [["nope"], ["eval", "--w-format", "int4"], ["mixed"]])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    assert "usage:" in capsys.readouterr().err
