"""python -m embeddinggemma_jax.export --model M --to gguf|sentence-transformers
    --quant f32|f16|q8_0|q4_0|mixed --output PATH

GGUF for llama.cpp (f32 / f16 / q8_0 / q4_0; `mixed` has no GGUF type and is refused), or a
sentence-transformers folder of the weights the quantized model computes with (dequantized; f32
and f16 write the float model). M is anything `Embedder.from_pretrained` loads.
"""

from __future__ import annotations

import shutil
import sys
from pathlib import Path

from embeddinggemma_jax import cli
from embeddinggemma_jax.errors import UserError

QUANTS = ("f32", "f16", "q8_0", "q4_0", "mixed")


def export(model: str, to: str, quant: str, output: str | Path, progress: bool = True) -> Path:
    """Library entry point of the CLI. Returns the written path."""
    from embeddinggemma_jax.embedder import Embedder
    from embeddinggemma_jax.interop import gguf_export

    output = Path(output)
    if to == "gguf":
        gguf_export._check_quant(quant)
    elif quant == "f16":
        raise UserError("--quant f16: sentence-transformers folders are written in float32")
    scheme = quant if quant in ("q8_0", "q4_0", "mixed") else None
    embedder = Embedder.from_pretrained(model, quant=scheme if to != "gguf" else None)
    if to == "gguf":
        import jax

        return gguf_export.write_gguf(
            output,
            jax.device_get(embedder.params),
            embedder.config,
            tokenizer_file=embedder.tokenizer.path,
            quant=quant,
            progress=progress,
        )
    # Written under a temporary name and renamed when complete; a previous export is renamed
    # aside first (deleting it in place could leave half of it at `output` if killed).
    tmp = output.with_name(output.name + ".tmp")
    old = output.with_name(output.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    embedder.save_pretrained(tmp)
    shutil.rmtree(old, ignore_errors=True)
    if output.exists():
        output.rename(old)
    tmp.rename(output)
    shutil.rmtree(old, ignore_errors=True)
    return output


@cli.command
def main(argv=None) -> int:
    parser = cli.ArgumentParser(prog="python -m embeddinggemma_jax.export", description=__doc__)
    parser.add_argument("--model", required=True, help="folder, hub id or run directory")
    parser.add_argument("--to", required=True, choices=("gguf", "sentence-transformers"))
    parser.add_argument("--quant", default="f32", choices=QUANTS)
    parser.add_argument("--output", required=True, help="file (gguf) or folder to write")
    args = parser.parse_args(argv)
    path = export(args.model, args.to, args.quant, args.output)
    print(f"wrote {path} ({_size(path) / 2**20:.1f} MiB)")
    return 0


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


if __name__ == "__main__":
    sys.exit(main())
