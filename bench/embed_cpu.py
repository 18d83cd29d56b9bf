"""CPU encode throughput (float32): `bench/embed.py --device cpu`, kept under the name issue #2 uses.

EMBEDDINGGEMMA_300M=/path/to/embeddinggemma-300m .venv/bin/python bench/embed_cpu.py
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import embed  # noqa: E402

if __name__ == "__main__":
    embed.main(["--device", "cpu", *sys.argv[1:]])
