"""``manifest.json``: what an exported model directory holds, and proof that its files are intact.

The manifest is written by :mod:`streamrec.export` and read by the runtime. It lists every file with its
sha256; :func:`load_manifest` refuses a directory whose manifest is missing or malformed and
:meth:`Manifest.verify` refuses one whose files are missing or differ (:class:`ModelIntegrityError`).

Pooling and L2 normalisation happen in the runtime (:mod:`streamrec.encoders.onnx`), not in the graph: the
ONNX files output ``last_hidden_state`` ``(batch, seq, dim)`` and the manifest's ``pooling`` says how to reduce
it. That works for any BERT-family folder, with or without a sentence-transformers pooling config.

Format 2 adds ``self_check``: a file of reference texts with their PyTorch fp32 embeddings (hashed like every
other file) that the runtime embeds at load time to check each variant on the CPU that runs it
(:mod:`streamrec.encoders.selfcheck`). A format-1 directory is refused: re-export it.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from streamrec.encoders.errors import ModelIntegrityError

__all__ = [
    "CPU",
    "CUDA",
    "MANIFEST_NAME",
    "POOLING_MODES",
    "TENSORRT",
    "Manifest",
    "Variant",
    "load_manifest",
    "sha256_file",
]

MANIFEST_NAME = "manifest.json"
FORMAT_VERSION = 2  # 2: self_check reference set; CPU INT8 recipe safe on AVX2 without VNNI
POOLING_MODES = ("mean", "cls", "max")
TENSORRT = "TensorrtExecutionProvider"
CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


@dataclass(frozen=True)
class Variant:
    """One ONNX graph of the model and the execution provider it is made for.

    ``validation`` holds the scores measured against the PyTorch fp32 reference at export time
    (``cos_mean``, ``cos_min``, ``top10_overlap``, ``n_texts``, the ``thresholds`` it passed, and
    ``self_check``: its scores on the self-check set on the export machine).
    """

    name: str
    file: str
    provider: str
    precision: str
    recipe: Mapping[str, Any] = field(default_factory=dict)
    validation: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Manifest:
    name: str
    source: Mapping[str, Any]
    dim: int
    max_seq_length: int
    pooling: str
    normalize: bool
    inputs: tuple[str, ...]
    output: str
    tokenizer: str
    files: Mapping[str, str]
    variants: Mapping[str, Variant]
    default_variant: dict[str, str]
    tools: Mapping[str, str] = field(default_factory=dict)
    created: str = ""
    format: int = FORMAT_VERSION
    # {"file": "selfcheck.json", "n_texts": 48, "reference": "..."}: the load-time self-check's reference set
    self_check: Mapping[str, Any] = field(default_factory=dict)

    def variant_for(self, provider: str) -> Variant | None:
        """The variant made for ``provider`` (the manifest's default for it when there are several)."""
        name = self.default_variant.get(provider)
        if name is not None and name in self.variants:
            return self.variants[name]
        return next((v for v in self.variants.values() if v.provider == provider), None)

    def verify(self, model_dir: Path, names: Iterable[str] | None = None) -> None:
        """Check the sha256 of ``names`` (default: every file listed); raise :class:`ModelIntegrityError`."""
        wanted = list(self.files) if names is None else list(names)
        for name in wanted:
            expected = self.files.get(name)
            if expected is None:
                raise ModelIntegrityError(f"{model_dir}: {name} is not listed in {MANIFEST_NAME}; re-run the export")
            path = model_dir / name
            if not path.is_file():
                raise ModelIntegrityError(f"{model_dir}: {name} is missing; re-run `streamrec export`")
            actual = sha256_file(path)
            if actual != expected:
                raise ModelIntegrityError(
                    f"{model_dir}: {name} does not match {MANIFEST_NAME} (sha256 {actual[:12]}…, expected "
                    f"{expected[:12]}…): the file was modified or corrupted; re-run `streamrec export`"
                )

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["inputs"] = list(self.inputs)
        return d

    def write(self, model_dir: Path) -> Path:
        path = model_dir / MANIFEST_NAME
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=False) + "\n", encoding="utf-8")
        return path

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Manifest:
        try:
            variants = {k: Variant(**v) for k, v in data["variants"].items()}
            m = cls(
                name=str(data["name"]),
                source=dict(data["source"]),
                dim=int(data["dim"]),
                max_seq_length=int(data["max_seq_length"]),
                pooling=str(data["pooling"]),
                normalize=bool(data["normalize"]),
                inputs=tuple(str(i) for i in data["inputs"]),
                output=str(data["output"]),
                tokenizer=str(data["tokenizer"]),
                files={str(k): str(v) for k, v in data["files"].items()},
                variants=variants,
                default_variant={str(k): str(v) for k, v in data["default_variant"].items()},
                tools={str(k): str(v) for k, v in data.get("tools", {}).items()},
                created=str(data.get("created", "")),
                format=int(data.get("format", 1)),
                self_check=dict(data.get("self_check") or {}),
            )
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ModelIntegrityError(f"malformed {MANIFEST_NAME}: {exc!r}; re-run `streamrec export`") from exc
        m._check()
        return m

    def _check(self) -> None:
        if self.format != FORMAT_VERSION:
            raise ModelIntegrityError(
                f"{MANIFEST_NAME} format {self.format} is not supported (expected "
                f"{FORMAT_VERSION}: older exports have no self-check reference set and an "
                "INT8 recipe that is wrong on AVX2 CPUs without VNNI); re-run "
                "`streamrec export --overwrite` with this version"
            )
        if self.pooling not in POOLING_MODES:
            raise ModelIntegrityError(f"unknown pooling {self.pooling!r} in {MANIFEST_NAME}; expected {POOLING_MODES}")
        if self.dim <= 0 or self.max_seq_length <= 0:
            raise ModelIntegrityError(f"{MANIFEST_NAME}: dim and max_seq_length must be positive")
        for name in self.files:
            p = PurePosixPath(name)
            if p.is_absolute() or ".." in p.parts or not p.parts:
                raise ModelIntegrityError(f"{MANIFEST_NAME} lists an unsafe path {name!r}")
        for v in self.variants.values():
            if v.file not in self.files:
                raise ModelIntegrityError(f"variant {v.name!r}: {v.file} has no sha256 in {MANIFEST_NAME}")
        if self.tokenizer not in self.files:
            raise ModelIntegrityError(f"{self.tokenizer} has no sha256 in {MANIFEST_NAME}")
        if str(self.self_check.get("file", "")) not in self.files:
            raise ModelIntegrityError(
                f"{MANIFEST_NAME} names no self-check reference file with a sha256 "
                f"({dict(self.self_check)!r}); re-run `streamrec export --overwrite`"
            )


def load_manifest(model_dir: Path) -> Manifest:
    """Read ``model_dir/manifest.json`` (no hashing: call :meth:`Manifest.verify` for that)."""
    path = Path(model_dir) / MANIFEST_NAME
    if not path.is_file():
        raise ModelIntegrityError(
            f"{model_dir} has no {MANIFEST_NAME}: it is not an exported streamrec model; run `streamrec export`"
        )
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ModelIntegrityError(f"cannot read {path}: {exc}; re-run `streamrec export`") from exc
    if not isinstance(data, dict):
        raise ModelIntegrityError(f"{path} is not a JSON object; re-run `streamrec export`")
    return Manifest.from_dict(data)
