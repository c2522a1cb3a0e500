"""Static instruction mix of the CUDA GEMM kernels' steady-state main loops, from their SASS.

For every GEMM kernel (the fused bit-plane kernels, CUTLASS's b1 baseline, the integer-MMA
kernel and the sm_90a BGMMA kernel) and every arch in the built extension, this finds the main
loop and counts the instructions of one iteration in steady state. mma.sync kernels: the
innermost loop that both issues the k-tile copies (LDGSTS) and multiplies (BMMA, IMMA), along
the shortest path from its head to its back edge that passes every block holding a copy, a
shared store (IMMA's code expansion) or an MMA (forward branches around them not taken; loops
nested inside, like IMMA's step loop where a K-window closes, left out). BGMMA: its consumers' loop per 1024-bit
stage (wait for the stage's mbarrier, four 256-bit steps of ldmatrix, wgmma fence, one BGMMA
per m64 tile, commit, wait, give the stage back), compiled twice, for 4 and for 3 m64 tiles
(a_bits 3, 5, 6 leave the fourth empty); both are straight-line from head to back edge.
Reported: MMAs, other instructions, their ratio, a breakdown by kind, and the kernel's
registers and shared memory (cuobjdump -res-usage). No GPU is needed: this is what the
compiler emitted, not a measurement of speed.

    python bench/sass_mix.py [--binary FILE | --sass FILE] [--out bench/results]

writes sass-mix.json and sass-mix.md (with the plane-slot occupancy of each tile for every bit
pair, computed from the tiles' geometry).
"""

import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.join(ROOT, "tests"))

GEMM_KERNELS = ("bitplane_gemm_kernel", "OpAndPopc", "bgmma_gemm_kernel", "imma_gemm_kernel")
INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
TARGET = re.compile(r"\b0x([0-9a-f]+)\b")
KINDS = [  # (kind, opcode prefixes), first match wins
    ("mma", ("BMMA", "HMMA", "IMMA", "BGMMA", "HGMMA", "IGMMA", "QGMMA")),
    ("ldsm", ("LDSM",)),
    ("ldgsts", ("LDGSTS",)),
    ("wgmma_sync", ("WARPGROUP",)),
    ("mbarrier", ("SYNCS",)),
    ("sync", ("BAR", "DEPBAR", "LDGDEPBAR", "WARPSYNC")),
    ("branch", ("BRA", "BRX", "JMP", "EXIT", "RET", "CALL", "BSSY", "BSYNC")),
    ("address/integer", ("IMAD", "IADD", "LEA", "LOP", "SHF", "SEL", "ISETP", "MOV", "IABS", "PRMT", "UIADD",
                         "UIMAD", "ULEA", "ULOP", "USHF", "USEL", "UISETP", "UMOV", "R2UR", "S2R", "S2UR", "CS2R",
                         "PLOP3", "P2R", "R2P", "FLO", "POPC")),
    ("memory", ("LD", "ST", "ATOM", "RED")),
]


def kind_of(opcode):
    for kind, prefixes in KINDS:
        if opcode.startswith(prefixes):
            return kind
    return "other"


def parse_functions(text):
    """{arch: {function: [(address, opcode, full text)]}} from `cuobjdump -sass`."""
    functions, arch, name = {}, None, None
    for line in text.splitlines():
        if line.startswith("arch = "):
            arch, name = line.split("=")[1].strip(), None
        elif line.strip().startswith("Function :"):
            name = line.split(":", 1)[1].strip()
            functions.setdefault(arch, {})[name] = []
        elif name is not None:
            m = INSTRUCTION.search(line)
            if m:
                body = m.group(2).strip()
                words = body.split()
                if words and words[0].startswith("@"):
                    words = words[1:]
                if words:
                    functions[arch][name].append((int(m.group(1), 16), words[0], body))
    return functions


def is_branch(opcode):
    return opcode.startswith(("BRA", "JMP"))


def main_loop(instructions):
    """(start, end) addresses of the innermost loop holding both LDGSTS and MMA, or None."""
    loops = []
    for addr, opcode, body in instructions:
        m = TARGET.search(body) if is_branch(opcode) else None
        if m and int(m.group(1), 16) <= addr:
            loops.append((int(m.group(1), 16), addr))
    candidates = []
    for lo, hi in loops:
        ops = [op for a, op, _ in instructions if lo <= a <= hi]
        if any(kind_of(op) == "mma" for op in ops) and any(op.startswith("LDGSTS") for op in ops):
            candidates.append((hi - lo, lo, hi))
    return min(candidates)[1:] if candidates else None


def bgmma_steady_loops(instructions):
    """Mix of each innermost loop that issues BGMMA, most MMAs first (the BGMMA kernel's
    consumer loop for 4 and for 3 m64 tiles)."""
    loops = []
    for addr, opcode, text in instructions:
        m = TARGET.search(text) if is_branch(opcode) else None
        if m and int(m.group(1), 16) <= addr:
            lo = int(m.group(1), 16)
            body = [i for i in instructions if lo <= i[0] <= addr]
            if any(op.startswith("BGMMA") for _, op, _ in body):
                loops.append((lo, addr, body))
    innermost = [(lo, hi, body) for lo, hi, body in loops
                 if not any(lo <= lo2 and hi2 <= hi and (lo2, hi2) != (lo, hi) for lo2, hi2, _ in loops)]
    return sorted(({"loop": [hex(lo), hex(hi)], **mix(body)} for lo, hi, body in innermost), key=lambda e: -e["mma"])


def hot_path(instructions, lo, hi):
    """Instructions of the shortest path lo -> hi through every block holding LDGSTS, STS (the IMMA
    kernel's code expansion) or MMA, outside loops nested in lo ... hi."""
    body = [(a, op, text) for a, op, text in instructions if lo <= a <= hi]
    addresses = [a for a, _, _ in body]
    index = {a: i for i, a in enumerate(addresses)}
    # Basic blocks: leaders at lo, at branch targets inside, and after branches.
    leaders = {0}
    for i, (a, op, text) in enumerate(body):
        if is_branch(op):
            m = TARGET.search(text)
            if m and int(m.group(1), 16) in index:  # forward targets, and heads of nested loops
                leaders.add(index[int(m.group(1), 16)])
            leaders.add(i + 1)
    starts = sorted(x for x in leaders if x < len(body))
    blocks = [(s, (starts[k + 1] if k + 1 < len(starts) else len(body))) for k, s in enumerate(starts)]
    block_of = {s: k for k, (s, _) in enumerate(blocks)}
    successors = []
    for s, e in blocks:
        succ = []
        a, op, text = body[e - 1]
        unconditional = is_branch(op) and not text.startswith("@")
        if is_branch(op):
            m = TARGET.search(text)
            if m and int(m.group(1), 16) > a and int(m.group(1), 16) in index:
                succ.append(block_of[index[int(m.group(1), 16)]])
        if not unconditional and e < len(body) and e in block_of:
            succ.append(block_of[e])
        successors.append(succ)
    # Loops nested inside (the IMMA kernel's step loop where a K-window closes) are off the
    # steady path: their blocks are neither required nor passed through.
    inner = [(int(TARGET.search(text).group(1), 16), a) for a, op, text in body
             if is_branch(op) and TARGET.search(text) and lo < int(TARGET.search(text).group(1), 16) <= a < hi]
    excluded = {k for k, (s, e) in enumerate(blocks) if any(t <= body[s][0] <= a for t, a in inner)}
    mandatory = [k for k, (s, e) in enumerate(blocks) if k not in excluded and
                 any(kind_of(op) == "mma" or op.startswith(("LDGSTS", "STS")) for _, op, _ in body[s:e])]
    size = [e - s for s, e in blocks]

    def shortest(src, dst):  # DAG (forward edges only): relax in address order
        dist, prev = {src: size[src]}, {}
        for k in range(src, dst + 1):
            if k not in dist:
                continue
            for n in successors[k]:
                if n <= dst and n not in excluded and dist[k] + size[n] < dist.get(n, 1 << 60):
                    dist[n], prev[n] = dist[k] + size[n], k
        path, k = [], dst
        while k != src:
            path.append(k)
            k = prev[k]
        return [src] + path[::-1]

    route = [0]
    for target in mandatory + [len(blocks) - 1]:
        if target > route[-1]:
            route += shortest(route[-1], target)[1:]
    return [body[i] for k in route for i in range(*blocks[k])]


def mix(path):
    counts = {}
    for _, op, _ in path:
        if op.startswith("NOP"):
            continue
        counts[kind_of(op)] = counts.get(kind_of(op), 0) + 1
    mmas = counts.get("mma", 0)
    other = sum(counts.values()) - mmas
    return {"mma": mmas, "non_mma": other, "non_mma_per_mma": round(other / mmas, 3) if mmas else None,
            "by_kind": dict(sorted(counts.items()))}


def resource_usage(text):
    """{arch: {function: {"registers": n, "shared": bytes, "local": bytes}}} from -res-usage."""
    usage, arch, name = {}, None, None
    for line in text.splitlines():
        if line.startswith("arch = "):
            arch = line.split("=")[1].strip()
        elif line.strip().startswith("Function "):
            name = line.strip().split()[1].rstrip(":")
        elif name and "REG:" in line:
            fields = dict(re.findall(r"(\w+(?:\[\d+\])?):(\d+)", line))
            usage.setdefault(arch, {})[name] = {"registers": int(fields["REG"]), "shared": int(fields["SHARED"]),
                                                "local": int(fields["LOCAL"]), "stack": int(fields["STACK"])}
            name = None
    return usage


def short_name(function):
    if "bgmma_gemm_kernel" in function:
        return "bgmma (3 warpgroups, 256 x 128 stacked rows, 3 stages)"
    if "OpAndPopc" in function:
        return "cutlass_b1_baseline"
    if "imma_gemm_kernel" in function and "ImmaWarpgroup" in function:
        return "igmma (2 warpgroups of 64x128 outputs, wgmma u8, 3 plane stages)"
    if "imma_gemm_kernel" in function:
        return "imma (2x4 warps of 64x32 outputs, u8 codes, 3 plane stages)"
    m = re.search(r"RegisterTileILi(\d+)ELi(\d+)ELi(\d+)ELi(\d+)ELi(\d+)E", function)
    if m:
        warps_a, warps_b, mma_a, mma_b, stages = map(int, m.groups())
        name = {(2, 4, 4, 8, 4): "wide", (4, 1, 4, 4, 4): "narrow"}.get((warps_a, warps_b, mma_a, mma_b, stages), "tile")
        return f"{name} ({warps_a}x{warps_b} warps of {16 * mma_a}x{8 * mma_b}, {stages} stages)"
    m = re.search(r"BitplaneTileILi(\d+)ELi(\d+)E", function)
    return f"stacked {m.group(1)}x{m.group(2)} (shared-memory recovery)" if m else function[:60]


def slot_occupancy():
    """Fraction of the MMA's stacked rows holding planes, per tile and bit pair: a thread's
    `slots` rows hold slots // bits real rows of `bits` planes each (csrc/cuda/gemm_plan.h's
    TileGeometry, read from the header itself)."""
    header = open(os.path.join(ROOT, "csrc", "cuda", "gemm_plan.h")).read()
    table = {}
    for name, slots_a, slots_b in re.findall(
            r"TileGeometry k(\w+)Geometry\{(\d+), \d+, \d+, (\d+),", header):
        sa, sb = int(slots_a), int(slots_b)
        table[f"{name.lower()} ({sa} x {sb} slots per thread)"] = {
            a: [round((sa // a * a / sa) * (sb // b * b / sb), 3) for b in range(1, 9)] for a in range(1, 9)}
    return table


# sm_80 dense tensor-core rates (A100: 4992 binary and 624 int8 TOPS, 108 SMs at 1.41 GHz): 16384 b1
# and 2048 u8 MACs per SM and clock, so an m16n8k256 b1 MMA (32768 MACs) and an m16n8k32 u8 MMA
# (4096) each hold one of the 4 sub-partitions' tensor cores for 8 clocks.
MMA_CLOCKS = 8


def bit_pair_estimate(report, occupancy):
    """Static estimate per bit pair (a_bits row, b_bits column) on sm_80: the wide b1 tile's clocks
    over the IMMA kernel's for 16 x 8 real outputs and 256 bits of K, each max(tensor core, issue
    of one instruction per clock) per sub-partition from this report's steady-state counts. The
    b1 tile needs a_bits * b_bits / occupancy MMAs, IMMA 8. No latency, memory or epilogue in
    it: above 1 the IMMA kernel should be faster, if the model holds. None without both kernels."""
    mix = {e["kernel"].split()[0]: e for e in report if e["arch"] == "sm_80" and e.get("non_mma_per_mma")}
    occ = next((v for k, v in occupancy.items() if k.startswith("wide")), None)
    if "wide" not in mix or "imma" not in mix or occ is None:
        return None

    def clocks(mmas, other_per_mma):
        return mmas * max(MMA_CLOCKS, 1 + other_per_mma)

    imma = clocks(8, mix["imma"]["non_mma_per_mma"])
    return {a: [round(clocks(a * b / occ[a][b - 1], mix["wide"]["non_mma_per_mma"]) / imma, 2) for b in range(1, 9)]
            for a in range(1, 9)}


def cuobjdump(flag, path):
    import test_build  # the project's way to find cuobjdump and nvdisasm

    tool = test_build.find_cuobjdump()
    env = dict(os.environ)
    import triton

    env["PATH"] = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin") + os.pathsep + env["PATH"]
    return subprocess.run([tool, flag, path], capture_output=True, text=True, check=True, env=env).stdout


def analyse(sass_text, usage_text):
    usage = resource_usage(usage_text) if usage_text else {}
    report = []
    for arch, functions in parse_functions(sass_text).items():
        for name, instructions in functions.items():
            if not any(k in name for k in GEMM_KERNELS):
                continue
            entry = {"arch": arch, "kernel": short_name(name), "function": name,
                     "instructions": len(instructions), **usage.get(arch, {}).get(name, {})}
            if "bgmma_gemm_kernel" in name:  # one row per steady loop; none where the body is empty
                for loop in bgmma_steady_loops(instructions):
                    report.append({**entry, "kernel": f"{entry['kernel']}, {loop['mma'] // 4} m64 tiles", **loop})
                continue
            if not any(kind_of(op) == "mma" for _, op, _ in instructions):
                continue  # an empty instantiation (IGMMA's body off sm_90a)
            loop = main_loop(instructions)
            if loop:
                path = hot_path(instructions, *loop)
                entry.update({"loop": [hex(loop[0]), hex(loop[1])], **mix(path)})
            report.append(entry)
    return report


def markdown(report, occupancy, estimate=None):
    lines = ["# Instruction mix of the GEMM kernels' main loops (static, from SASS)", "",
             "One steady-state iteration of each kernel's main loop, counted from `cuobjdump -sass` by",
             "`bench/sass_mix.py`: mma.sync b1 kernels one 512-bit k-tile (the shortest path through every",
             "copy and MMA of the innermost loop that holds both), IMMA one 128-bit k-tile (the same, through",
             "its copies, its expansion of one row's planes into codes and a warp's 4 steps of 4 x 4 u8 MMAs,",
             "off the step loop where a K-window closes; copies and loads for 8 + 8 bits, all predicated on",
             "the runtime bits; IGMMA likewise, its 4 wgmma m64n128k32 per warp doing the work of IMMA's",
             "64 m16n8k32), BGMMA one 1024-bit stage of a consumer",
             "warpgroup (for 4 and for 3 m64 tiles; its registers are ptxas' 168 per thread before",
             "`setmaxnreg` gives the consumers 232). Not a timing: no GPU ran these kernels.", "",
             "| arch | kernel | MMA | other | other per MMA | LDSM | LDGSTS | LDS/STS | sync | wgmma sync | mbarrier "
             "| branch | addr/int | regs | smem (static) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for e in report:
        k = e.get("by_kind", {})
        lines.append(f"| {e['arch']} | {e['kernel']} | {e.get('mma', '-')} | {e.get('non_mma', '-')} | "
                     f"{e.get('non_mma_per_mma', '-')} | {k.get('ldsm', 0)} | {k.get('ldgsts', 0)} | {k.get('memory', 0)} | "
                     f"{k.get('sync', 0)} | {k.get('wgmma_sync', 0)} | {k.get('mbarrier', 0)} | {k.get('branch', 0)} | "
                     f"{k.get('address/integer', 0)} | "
                     f"{e.get('registers', '-')} | {e.get('shared', '-')} |")
    lines += ["", "## Plane-slot occupancy (share of MMA rows holding planes, by a_bits row, b_bits column)", ""]
    for tile, rows in occupancy.items():
        lines += [f"**{tile}**", "", "| a \\ b | " + " | ".join(str(b) for b in range(1, 9)) + " |",
                  "|---" * 9 + "|"]
        lines += [f"| {a} | " + " | ".join(f"{v:.2f}" for v in rows[a]) + " |" for a in range(1, 9)]
        lines.append("")
    if estimate:
        lines += ["## Static estimate: wide b1 tile over IMMA, sm_80 (a_bits row, b_bits column)", "",
                  "Sub-partition clocks for 16 x 8 real outputs and 256 bits of K, each kernel's max(tensor core,",
                  "issue): an m16n8k256 b1 MMA and an m16n8k32 u8 MMA both hold the tensor core 8 clocks (A100:",
                  "4992 binary / 624 int8 dense TOPS); the b1 tile needs a_bits * b_bits / occupancy MMAs at",
                  "1 + its other instructions per MMA of issue each, IMMA 8 at 1 + its own. Above 1: IMMA ahead,",
                  "if this model (no latency, memory or epilogue) holds. Not measured; the kernel map's",
                  "threshold (x_bits * w_bits >= 16) leaves a factor of about 2 for what it omits.", "",
                  "| a \\ b | " + " | ".join(str(b) for b in range(1, 9)) + " |", "|---" * 9 + "|"]
        lines += [f"| {a} | " + " | ".join(f"{v:.1f}" for v in estimate[a]) + " |" for a in range(1, 9)]
        lines.append("")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", help="a CUDA object or library to read instead of the built extension")
    parser.add_argument("--sass", help="a saved `cuobjdump -sass` listing instead of the built extension")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = parser.parse_args()
    if args.sass:
        sass, usage = open(args.sass).read(), ""
    else:
        if args.binary:
            binary = args.binary
        else:
            import apq_torch

            binary = apq_torch._C.__file__
        sass, usage = cuobjdump("-sass", binary), cuobjdump("-res-usage", binary)
    report = analyse(sass, usage)
    occupancy = slot_occupancy()
    estimate = bit_pair_estimate(report, occupancy)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sass-mix.json"), "w") as f:
        json.dump({"kernels": report, "slot_occupancy": occupancy, "b1_over_imma_clocks_sm80": estimate}, f, indent=1)
    with open(os.path.join(args.out, "sass-mix.md"), "w") as f:
        f.write(markdown(report, occupancy, estimate))
    for e in report:
        print(f"{e['arch']:7} {e['kernel'][:48]:48} mma {e.get('mma')} other {e.get('non_mma')} "
              f"per-mma {e.get('non_mma_per_mma')} regs {e.get('registers')}")


if __name__ == "__main__":
    main()
