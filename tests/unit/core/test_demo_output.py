"""What ``streamrec demo`` prints about the encoder, read from the worker's encoder-info metric."""

from __future__ import annotations

from streamrec.commands.demo import _encoder_summary


def test_the_demo_says_which_variant_serves_and_why() -> None:
    passed = (
        'streamrec_encoder_info{fallback_from="",fallback_reason="",model="m:cpu-int8@ab",'
        'provider="CPUExecutionProvider",self_check="passed",variant="cpu-int8"}'
    )
    assert _encoder_summary({passed: 1.0}) == "m:cpu-int8@ab on CPUExecutionProvider (self-check passed)"
    fell = (
        'streamrec_encoder_info{fallback_from="cpu-int8",fallback_reason="cpu-int8: cosine mean 0.9830 < 0.995",'
        'model="m:fp32@cd",provider="CPUExecutionProvider",self_check="fallback",variant="fp32"}'
    )
    assert _encoder_summary({fell: 1.0, "streamrec_index_ready": 1.0}) == (
        "m:fp32@cd on CPUExecutionProvider (self-check fallback: cpu-int8 failed (cpu-int8: cosine mean 0.9830 "
        "< 0.995))"
    )
    assert _encoder_summary({}).startswith("unknown")
