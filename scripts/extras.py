"""Print the requirements of pyproject.toml's groups (`base` = the core dependencies).

The Makefile installs dependencies from here so that pyproject.toml stays their one source.
"""

import sys
from pathlib import Path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10: the Makefile installs tomli
    import tomli as tomllib

project = tomllib.loads((Path(__file__).parent.parent / "pyproject.toml").read_text())["project"]
groups = {"base": project["dependencies"], **project["optional-dependencies"]}
print(" ".join(req.replace(" ", "") for name in sys.argv[1:] for req in groups[name]))
