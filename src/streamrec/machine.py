"""What machine this is: CPU model, family/model and the instruction sets that change numbers or speed.

One function for everything that has to say where it ran: every benchmark's JSON ``machine`` block and the
encoder's load-time self-check warning. Linux reads ``/proc/cpuinfo``; elsewhere the fields it cannot know
are empty rather than guessed.

Why the flags matter: dynamic INT8 MatMul in onnxruntime (u8 activations x s8 weights) uses ``vpdpbusd`` on
CPUs with VNNI (``avx512_vnni`` or ``avx_vnni``) or AMX tiles, but ``vpmaddubsw`` on AVX2/AVX-512 CPUs
without them, and that instruction saturates the sum of each pair of products at 16 bits. Two figures (or two
encoders' outputs) from machines that differ here are not comparable.
"""

from __future__ import annotations

import os
import platform
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = ["ISA_FLAGS", "CpuInfo", "cpu_info", "machine"]

# The /proc/cpuinfo flags recorded everywhere (amx_* are listed when present: amx_tile, amx_int8, amx_bf16).
ISA_FLAGS = ("avx2", "fma", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16")


@dataclass(frozen=True)
class CpuInfo:
    """The CPU as the kernel reports it. ``flags``: the subset of :data:`ISA_FLAGS` and ``amx*`` present."""

    model_name: str
    vendor: str = ""
    family: int | None = None
    model: int | None = None
    stepping: int | None = None
    flags: tuple[str, ...] = field(default_factory=tuple)

    @property
    def int8_dot(self) -> str:
        """The u8 x s8 dot-product instruction onnxruntime's INT8 MatMul kernels use on this CPU."""
        if not self.flags and self.vendor == "":
            return "unknown"
        if "amx_int8" in self.flags:
            return "amx"
        if "avx512_vnni" in self.flags or "avx_vnni" in self.flags:
            return "vnni"
        if "avx2" in self.flags:
            return "vpmaddubsw (16-bit saturating)"
        return "sse/other"

    def describe(self) -> str:
        """One line for logs: ``AMD EPYC (family 25 model 1; avx2 fma; int8 dot: vpmaddubsw ...)``."""
        fam = f"family {self.family} model {self.model}; " if self.family is not None else ""
        flags = " ".join(self.flags) or "no AVX2/AVX-512"
        return f"{self.model_name} ({fam}{flags}; int8 dot: {self.int8_dot})"

    def to_dict(self) -> dict[str, Any]:
        return {
            "cpu": self.model_name,
            "cpu_vendor": self.vendor,
            "cpu_family": self.family,
            "cpu_model": self.model,
            "cpu_stepping": self.stepping,
            "cpu_flags": list(self.flags),
            "int8_dot": self.int8_dot,
        }


def _parse_cpuinfo(text: str) -> CpuInfo:
    first: dict[str, str] = {}
    for line in text.splitlines():
        if not line.strip():
            if first:
                break  # the first processor's block is enough
            continue
        key, _, value = line.partition(":")
        first.setdefault(key.strip(), value.strip())

    def num(key: str) -> int | None:
        try:
            return int(first[key])
        except (KeyError, ValueError):
            return None

    have = set(first.get("flags", "").split())
    flags = tuple(f for f in ISA_FLAGS if f in have) + tuple(sorted(f for f in have if f.startswith("amx")))
    return CpuInfo(
        model_name=first.get("model name", "") or platform.processor() or "unknown",
        vendor=first.get("vendor_id", ""),
        family=num("cpu family"),
        model=num("model"),
        stepping=num("stepping"),
        flags=flags,
    )


def cpu_info(cpuinfo: Path = Path("/proc/cpuinfo")) -> CpuInfo:
    """This machine's CPU (``model_name`` falls back to ``platform.processor()`` without /proc/cpuinfo)."""
    try:
        return _parse_cpuinfo(cpuinfo.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        return CpuInfo(model_name=platform.processor() or platform.machine() or "unknown")


def machine(note: str = "") -> dict[str, Any]:
    """The ``machine`` block of a benchmark JSON: platform, CPU (model, family/model, ISA flags), cores, load."""
    load = list(os.getloadavg()) if hasattr(os, "getloadavg") else []
    return {
        "platform": platform.platform(),
        **cpu_info().to_dict(),
        "cores": os.cpu_count(),
        "loadavg_before": load,
        "note": note,
    }
