"""Write the README's table of supported models from the model zoo.

    PYTHONPATH=. python tests/zoo_table.py          # rewrites README.md between the markers
    PYTHONPATH=. python tests/zoo_table.py --check  # exit 1 when README.md differs

Each cell is what tests/zoo.py finds (``python_outcome``, ``cli_outcome``):
``works`` or the refusal's first line; tests/test_model_zoo.py checks every
``works`` against the model itself and that the README says what it finds.
"""

from __future__ import annotations

import sys
import tempfile
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from zoo import README_BEGIN, README_END, ZOO, cli_outcome, python_outcome, render_table  # noqa: E402

README = Path(__file__).resolve().parents[1] / "README.md"


def zoo_table() -> dict[str, dict[str, str]]:
    table = {}
    warnings.simplefilter("ignore")
    for name in ZOO:
        with tempfile.TemporaryDirectory() as folder:
            table[name] = {**python_outcome(name), **cli_outcome(name, Path(folder))[0]}
        print(name, table[name], file=sys.stderr)
    return table


def main(argv: list[str]) -> int:
    text = README.read_text()
    table = render_table(zoo_table())
    if README_BEGIN in text:
        before, rest = text.split(README_BEGIN, 1)
        after = rest.split(README_END, 1)[1]
    else:
        before, after = text.rstrip("\n") + "\n\n## Supported models\n\n", "\n"
    updated = f"{before}{README_BEGIN}\n{table}\n{README_END}{after}"
    if "--check" in argv:
        return 0 if updated == text else 1
    README.write_text(updated)
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
