"""MkDocs hook: the benchmark plots of ``benchmarks/results/`` become part of the site as ``results/*.png``.

The pages show the committed result files themselves (tables through ``pymdownx.snippets``, plots through
this hook), so the manual cannot drift from ``benchmarks/results/``.
"""

from pathlib import Path

from mkdocs.structure.files import File


def on_files(files, config):
    root = Path(config.config_file_path).parent
    for png in sorted((root / "benchmarks" / "results").glob("*.png")):
        files.append(File.generated(config, f"results/{png.name}", abs_src_path=str(png)))
    return files
