"""Static instruction mix of the sm_90a BGMMA kernel's steady-state consumer loop, from SASS.

The steady state of csrc/cuda/bgmma_gemm_kernel.cuh is a loop per K-stage (1024 bits): wait
for the stage's mbarrier, four 256-bit steps of (ldmatrix A fragments, wgmma fence, one
BGMMA per m64 tile, commit, wait for all but the newest group), give the previous stage back.
It is compiled twice, for 4 and for 3 m64 tiles (a_bits 3, 5, 6 leave the fourth empty). This
counts one iteration of each: the innermost loops that issue BGMMA, straight-line from head to
back edge (the only branch out is the mbarrier retry). No GPU is needed: this is what ptxas
emitted, not a measurement of speed.

    python bench/sass_mix_bgmma.py [--binary FILE | --sass FILE] [--out bench/results]

writes sass-mix-bgmma.json. Built to merge into a per-kernel table: `KERNELS` maps a function
name pattern to the function that reads its loop from parsed SASS.
"""

import argparse
import json
import os
import re
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
INSTRUCTION = re.compile(r"/\*([0-9a-f]{4,})\*/\s+(.*?)\s*;")
BRANCH_TARGET = re.compile(r"\bBRA(?:\.\S+)?\s+(?:!?U?P\w+,\s*)?0x([0-9a-f]+)")
KINDS = [  # (kind, opcode prefixes), first match wins
    ("mma", ("BGMMA", "HGMMA", "IGMMA", "QGMMA", "BMMA", "HMMA", "IMMA")),
    ("ldsm", ("LDSM",)),
    ("wgmma_sync", ("WARPGROUP",)),
    ("mbarrier", ("SYNCS",)),
    ("branch", ("BRA", "BRX", "JMP", "EXIT", "RET", "CALL", "BSSY", "BSYNC")),
    ("uniform", ("U", "R2UR", "S2UR", "VOTEU")),
    ("integer", ("IMAD", "IADD", "LEA", "LOP", "SHF", "SEL", "ISETP", "MOV", "PRMT", "VIADD", "VIMNMX", "PLOP3",
                 "S2R", "CS2R")),
]


def kind_of(opcode):
    for kind, prefixes in KINDS:
        if opcode.startswith(prefixes):
            return kind
    return "other"


def parse_functions(text):
    """{arch: {function: [(address, opcode, text)]}} from `cuobjdump -sass`."""
    functions, arch, name = {}, None, None
    for line in text.splitlines():
        if line.startswith("arch = "):
            arch, name = line.split("=")[1].strip(), None
        elif line.strip().startswith("Function :"):
            name = line.split(":", 1)[1].strip()
            functions.setdefault(arch, {})[name] = []
        elif name is not None:
            m = INSTRUCTION.search(line)
            words = m.group(2).split() if m else []
            if words and words[0].startswith("@"):
                words = words[1:]
            if words:
                functions[arch][name].append((int(m.group(1), 16), words[0], m.group(2)))
    return functions


def bgmma_steady_loops(instructions):
    """Mix of each innermost loop that issues BGMMA: [{mma, non_mma, non_mma_per_mma, by_kind}]."""
    loops = []
    for addr, opcode, text in instructions:
        m = BRANCH_TARGET.search(text)
        if opcode.startswith("BRA") and m and int(m.group(1), 16) <= addr:
            body = [op for a, op, _ in instructions if int(m.group(1), 16) <= a <= addr and not op.startswith("NOP")]
            if any(op.startswith("BGMMA") for op in body):
                loops.append((int(m.group(1), 16), addr, body))
    innermost = [(lo, hi, body) for lo, hi, body in loops
                 if not any(lo <= lo2 and hi2 <= hi and (lo2, hi2) != (lo, hi) for lo2, hi2, _ in loops)]
    report = []
    for lo, hi, body in innermost:
        counts = {}
        for op in body:
            counts[kind_of(op)] = counts.get(kind_of(op), 0) + 1
        mmas = counts.get("mma", 0)
        report.append({"loop": [hex(lo), hex(hi)], "mma": mmas, "non_mma": len(body) - mmas,
                       "non_mma_per_mma": round((len(body) - mmas) / mmas, 3), "by_kind": dict(sorted(counts.items()))})
    return sorted(report, key=lambda e: -e["mma"])


KERNELS = {"bgmma_gemm_kernel": bgmma_steady_loops}


def cuobjdump(flag, path):
    sys.path.insert(0, os.path.join(ROOT, "tests"))
    import test_build  # the project's way to find cuobjdump (and nvdisasm, shipped with triton)
    import triton

    env = dict(os.environ)
    env["PATH"] = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin") + os.pathsep + env["PATH"]
    return subprocess.run([test_build.find_cuobjdump(), flag, path], capture_output=True, text=True, check=True,
                          env=env).stdout


def analyse(sass_text, usage_text=""):
    usage = {}
    for function, line in re.findall(r"Function (\S+):\n\s*(REG:.*)", usage_text):
        usage[function] = {k: int(v) for k, v in re.findall(r"(REG|STACK|SHARED|LOCAL):(\d+)", line)}
    report = []
    for arch, functions in parse_functions(sass_text).items():
        for name, instructions in functions.items():
            for pattern, count in KERNELS.items():
                if pattern in name and any(op.startswith("BGMMA") for _, op, _ in instructions):
                    report.append({"arch": arch, "function": name, "instructions": len(instructions),
                                   "resources": usage.get(name, {}), "steady_state_loops": count(instructions)})
    return report


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--binary", help="a CUDA object or library instead of the built extension")
    parser.add_argument("--sass", help="a saved `cuobjdump -sass` listing instead of the built extension")
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "results"))
    args = parser.parse_args()
    if args.sass:
        sass, usage = open(args.sass).read(), ""
    else:
        if args.binary:
            binary = args.binary
        else:
            sys.path.insert(0, ROOT)
            import apq_torch

            binary = apq_torch._C.__file__
        sass, usage = cuobjdump("-sass", binary), cuobjdump("-res-usage", binary)
    report = analyse(sass, usage)
    os.makedirs(args.out, exist_ok=True)
    with open(os.path.join(args.out, "sass-mix-bgmma.json"), "w") as f:
        json.dump({"source": "static count from cuobjdump -sass; not run on a GPU", "kernels": report}, f, indent=1)
    for e in report:
        for loop in e["steady_state_loops"]:
            print(f"{e['arch']} BGMMA steady loop {loop['loop']}: {loop['mma']} BGMMA, {loop['non_mma']} other "
                  f"({loop['non_mma_per_mma']} per BGMMA) {loop['by_kind']}")


if __name__ == "__main__":
    main()
