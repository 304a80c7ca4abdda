"""Packaging beyond what pyproject.toml can declare: a built wheel carries the repository's ``gin/`` tree, whatever
its layout, as ``flowrl/gin/`` (``flowrl.config.find_gin`` looks there when installed). An editable install reads
the repository's ``gin/`` in place and needs no copy."""

from pathlib import Path

from setuptools import setup
from setuptools.command.build_py import build_py


class BuildPyWithConfigs(build_py):
    def run(self) -> None:
        super().run()
        if getattr(self, "editable_mode", False):
            return
        for source in sorted(Path("gin").rglob("*.gin")):
            target = Path(self.build_lib) / "flowrl" / source
            self.mkpath(str(target.parent))
            self.copy_file(str(source), str(target))


setup(cmdclass={"build_py": BuildPyWithConfigs})
