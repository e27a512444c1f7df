"""The numbers the README quotes are those of the recorded files they come from, rounded as printed."""

from __future__ import annotations

import json
import re
from pathlib import Path

from rlcsc.inference import describe_model
from rlcsc.reference import table

REPO = Path(__file__).resolve().parents[1]
README, RUNS = REPO / "README.md", REPO / "runs"


def test_the_set5_x3_psnr_of_each_named_model_is_its_recorded_evaluation() -> None:
    text = " ".join(README.read_text().split())
    paper = table("table1").query("dataset == 'Set5' and scale == 3").set_index("method").psnr
    vdsr = json.loads((RUNS / "VDSR-official" / "metrics.json").read_text())["Set5"]["x3"]["psnr"]
    k25 = json.loads((RUNS / "K25-paper" / "metrics.json").read_text())["Set5"]["x3"]["psnr"]
    about = describe_model(RUNS / "K25-paper" / "model.pt")
    done, planned = about["epochs_done"], about["epochs_planned"]
    assert f"`vdsr` {vdsr:.2f} dB (the paper's VDSR: {paper['VDSR']:.2f})" in text
    assert (f"`rlcsc` {k25:.2f} dB after {done:g} of its {planned:g} epochs (the paper's RL-CSC after {planned:g}: "
            f"{paper['RL-CSC']:.2f})") in text


def _numbers(cell: str) -> list[tuple[float, float]]:
    """Each number printed in a table cell, with how far rounding may have moved it: half a unit of its
    last digit, and nothing for a 0 (none at all)."""
    return [(float(m.group()), 0.0 if m.group() == "0" else 0.5 * 10.0 ** -len(m.group(1) or ""))
            for m in re.finditer(r"[-+]?\d+(?:\.(\d+))?", cell)]


def test_the_readme_inference_table_is_the_recorded_benchmark() -> None:
    """Every number of the README's table of inference precisions is the recorded benchmark's, rounded."""
    result = json.loads((RUNS / "K25-paper" / "inference_cpu.json").read_text())
    readme = README.read_text()
    assert f"| precision | ms per {result['tile']}x{result['tile']} tile |" in readme
    rows = {}
    for line in readme.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if cells[0] in result["variants"]:
            rows[cells[0]] = cells[1:]
    assert sorted(rows) == sorted(result["variants"])
    for name, cells in rows.items():
        v, sets = result["variants"][name], ("Set5", "Set14")
        q = [v["quality"][s] for s in sets]
        widest = max(q, key=lambda c: abs(c["largest_image_change_db"]))
        expected = [[v["ms_per_tile"]], [v["speed_vs_fp32"]], [c["psnr_change_db"] for c in q],
                    [widest["largest_image_change_db"]], [max(c["max_grey_difference"] for c in q)],
                    [100 * max(c["share_over_1_grey"] for c in q)]]
        for cell, values in zip(cells, expected, strict=True):
            printed = _numbers(cell.replace("Set14", "").replace("Set5", ""))
            assert len(printed) == len(values), (name, cell)
            for (shown, half), value in zip(printed, values):
                assert abs(shown - value) <= half + 1e-12, (name, cell, value)


def test_the_readme_avx2_sentence_is_the_recorded_benchmark() -> None:
    """The README's fp32 and winograd timings with the libraries limited to AVX2 are those of the recorded
    benchmark, made with those limits."""
    result = json.loads((RUNS / "K25-paper" / "inference_cpu_avx2.json").read_text())
    limits = result["machine"]["isa_limits"]
    assert limits == {"ATEN_CPU_CAPABILITY": "avx2", "ONEDNN_MAX_CPU_ISA": "AVX2", "MKL_ENABLE_INSTRUCTIONS": "AVX2"}
    assert result["machine"]["cpu_capability"] == "AVX2"
    fp32, winograd = result["variants"]["fp32"], result["variants"]["winograd"]
    grey = max(q["max_grey_difference"] for q in winograd["quality"].values())
    text = " ".join(README.read_text().split())
    assert (f"fp32 took {fp32['ms_per_tile']:.0f} ms per {result['tile']}x{result['tile']} tile and winograd "
            f"{winograd['ms_per_tile']:.0f} ms ({winograd['speed_vs_fp32']:.2f}x), no output pixel more than {grey} "
            f"grey level{'s' if grey != 1 else ''} from fp32's") in text


def test_the_readme_vdsr_sentence_is_the_recorded_benchmark() -> None:
    """The README's reason for VDSR's default precision quotes VDSR's recorded benchmark, rounded as printed."""
    vdsr = json.loads((RUNS / "VDSR-official" / "inference_cpu.json").read_text())
    k25 = json.loads((RUNS / "K25-paper" / "inference_cpu.json").read_text())
    quality = vdsr["variants"]["bf16"]["quality"]
    widest = max(quality.values(), key=lambda q: abs(q["largest_image_change_db"]))
    text = " ".join(README.read_text().split())
    assert (f"on VDSR, bf16 moves the Set5 x3 PSNR by {quality['Set5']['psnr_change_db']:.4f} dB, one image's by "
            f"{widest['largest_image_change_db']:.3f} dB and a pixel by up to "
            f"{max(q['max_grey_difference'] for q in quality.values())} grey levels on "
            f"{' and '.join(quality)}") in text
    assert (f"`--model vdsr` computes in fp32, at {vdsr['variants']['fp32']['ms_per_tile']:.0f} ms per "
            f"{vdsr['tile']}x{vdsr['tile']} tile (K25: {k25['variants']['fp32']['ms_per_tile']:.0f})") in text
    assert vdsr["machine"]["cpu"] == k25["machine"]["cpu"]  # "on the same CPU"
