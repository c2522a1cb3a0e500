"""python -m apq_torch: the demo runs end to end; bad arguments exit with a usage error."""

import pytest

from apq_torch.tools.cli import main


def test_demo_runs_and_reports_exactness(capsys):
    assert main(["demo", "--size", "256", "--reps", "1", "--windows", "1", "--calib-windows", "2", "--no-compile"]) == 0
    out = capsys.readouterr().out
    assert out.count("bit-exact") == 4 and "MISMATCH" not in out
    assert "decode tok/s" in out
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


def test_bench_model_smoke_run_writes_json_and_markdown(tmp_path, capsys):
    """The end-to-end model benchmark on the tiny random Llama: every field, the targets, the
    decode profile. Same model, prompt and new tokens as tests/test_tools_generate.py, so
    Inductor compiles the W4A8 decode step once for both."""
    import json

    prefix = str(tmp_path / "e2e")
    assert main(["bench", "--model", "tiny", "--contenders", "fp32 eager", "W4A8 fast", "--reps", "1",
                 "--prompt-tokens", "8", "--new-tokens", "64", "--threads", "1", "--out", prefix]) == 0
    out = capsys.readouterr().out
    assert "| W4A8 fast |" in out and "W4A8 decode >= 2x fp32 eager" in out
    result = json.load(open(prefix + ".json"))
    assert set(result["rows"]) == {"fp32 eager", "W4A8 fast"}
    fast = result["rows"]["W4A8 fast"]
    assert fast["decode_tok_s"] > 0 and fast["prefill_tok_s"] > 0 and len(fast["tokens"]) == 64
    assert fast["first_difference_vs_eager"] is None  # greedy tokens identical to the eager model's
    assert result["recompiles_while_timing"] == 0
    assert [t["target"] for t in result["targets"]][0] == "W4A8 prefill >= 1.5x fp32 eager"
    profile = result["decode_profiles"]["W4A8 fast"]
    assert profile["ms"]["apq GEMM (qmatmul, linear)"] > 0 and abs(sum(profile["share"].values()) - 1) < 1e-6
    assert open(prefix + ".md").read().startswith("# A tiny random Llama")


@pytest.mark.parametrize("argv, message", [(["--contenders", "fp32 eager", "W5A8 fast"], "W5A8 fast"),
                                           (["--contenders", "W4A8 fast"], "baseline"),
                                           (["--new-tokens", "1"], "new-tokens")])
def test_bench_model_rejects_bad_arguments(argv, message, capsys):
    with pytest.raises(SystemExit):
        main(["bench", "--model", "tiny", *argv])
    assert message in capsys.readouterr().err


def test_activation_clip_flags_reach_the_config():
    import argparse

    from apq_torch.tools.cli import _add_config_args, _calibrates, _config_from_args

    p = argparse.ArgumentParser()
    _add_config_args(p)
    config = _config_from_args(p.parse_args(["--a-bits", "4", "--a-clip", "0.9"]))
    assert config.a_clip == 0.9 and not config.a_clip_search and not _calibrates(config)
    config = _config_from_args(p.parse_args(["--a-clip-search"]))
    assert config.a_clip_search and _calibrates(config)
