"""streamrec.machine: the CPU facts every benchmark and the encoder's self-check warning record."""

from __future__ import annotations

from pathlib import Path

from streamrec.machine import CpuInfo, cpu_info, machine

ZEN3 = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model\t\t: 1
model name\t: AMD EPYC 7B13
stepping\t: 1
flags\t\t: fpu sse sse2 ssse3 fma sse4_1 sse4_2 avx f16c avx2 bmi2 sha_ni

processor\t: 1
vendor_id\t: AuthenticAMD
model name\t: a second block that must be ignored
"""

GENOA = """vendor_id\t: AuthenticAMD
cpu family\t: 26
model\t\t: 2
model name\t: AMD EPYC
flags\t\t: sse2 fma avx2 avx512f avx512bw avx512_vnni avx_vnni avx512_bf16
"""

SAPPHIRE = """vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 143
model name\t: Intel(R) Xeon(R) Platinum 8480+
flags\t\t: avx2 fma avx512f avx512bw avx512_vnni amx_bf16 amx_tile amx_int8
"""


def test_avx2_only_cpu_is_named_with_its_saturating_int8_instruction(tmp_path: Path) -> None:
    (tmp_path / "cpuinfo").write_text(ZEN3)
    cpu = cpu_info(tmp_path / "cpuinfo")
    assert (cpu.model_name, cpu.vendor, cpu.family, cpu.model, cpu.stepping) == (
        "AMD EPYC 7B13",
        "AuthenticAMD",
        25,
        1,
        1,
    )
    assert cpu.flags == ("avx2", "fma")
    assert cpu.int8_dot.startswith("vpmaddubsw")
    assert "family 25 model 1" in cpu.describe() and "saturating" in cpu.describe()


def test_vnni_and_amx_cpus(tmp_path: Path) -> None:
    (tmp_path / "a").write_text(GENOA)
    (tmp_path / "b").write_text(SAPPHIRE)
    genoa, spr = cpu_info(tmp_path / "a"), cpu_info(tmp_path / "b")
    assert genoa.int8_dot == "vnni" and "avx512_vnni" in genoa.flags and "avx_vnni" in genoa.flags
    assert spr.int8_dot == "amx" and {"amx_bf16", "amx_int8", "amx_tile"} <= set(spr.flags)


def test_without_proc_cpuinfo(tmp_path: Path) -> None:
    cpu = cpu_info(tmp_path / "absent")
    assert isinstance(cpu, CpuInfo) and cpu.model_name and cpu.family is None and cpu.int8_dot == "unknown"


def test_machine_block_has_what_two_figures_need_to_be_told_apart() -> None:
    m = machine("a note")
    for key in ("platform", "cpu", "cpu_family", "cpu_model", "cpu_flags", "int8_dot", "cores", "loadavg_before"):
        assert key in m
    assert m["note"] == "a note" and isinstance(m["cpu_flags"], list)
