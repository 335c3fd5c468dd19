"""crawl2serve: the Dagster project's root package.

Its subpackages keep the repository's top-level folders (``pyproject.toml`` maps them):
``crawl2serve.assets`` (assets/), ``crawl2serve.resources`` (resources/), ``crawl2serve.pipelines``
(pipelines/: jobs, schedules, sensors) and ``crawl2serve.serving`` (serving/: gateway and engines), so that
installing the project adds one top-level name to site-packages, not four generic ones.
"""

from pathlib import Path

# In a checkout (editable install, or the repository on sys.path) the subpackages are the repository's folders;
# an installed wheel has them inside this package already.
_checkout = Path(__file__).resolve().parent.parent
if (_checkout / "pyproject.toml").is_file() and (_checkout / "assets").is_dir():
    __path__.append(str(_checkout))
