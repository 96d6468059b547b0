"""Copy the facts of the released models (state-dict layout, sizes, FLOPs) into tests/spec/.

The specification is read from a folder laid out like the project's shared ``spec/``
(``variants.json``, ``complexity.json``, ``state_dict/<model>.json``) and written compactly,
so that the tests run from a clone that has nothing beside it.

    python scripts/import_spec.py PATH/TO/spec
"""

import json
import sys
from pathlib import Path

OUT = Path(__file__).resolve().parents[1] / "tests" / "spec"


def main(spec: Path) -> None:
    variants = json.loads((spec / "variants.json").read_text())["variants"]
    models = {}
    for name, info in sorted(variants.items()):
        entries = json.loads((spec / "state_dict" / f"{name}.json").read_text())["entries"]
        models[name] = {
            "constructor_kwargs": info["constructor_kwargs"],
            "num_params": info["num_params"],
            "entries": [entry[:4] for entry in entries],
            "aliases": {entry[0]: entry[4]["alias_of"] for entry in entries if len(entry) > 4},
        }
    OUT.mkdir(parents=True, exist_ok=True)
    (OUT / "models.json").write_text(json.dumps(models, separators=(",", ":")) + "\n")
    complexity = json.loads((spec / "complexity.json").read_text())
    (OUT / "complexity.json").write_text(json.dumps(complexity, indent=1) + "\n")
    print(f"wrote {len(models)} models to {OUT}")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
