"""One way into the config: find files (:mod:`~flowrl.config.files`), parse them strictly
(:mod:`~flowrl.config.parsing`), ask for values (:mod:`~flowrl.config.query`, the only reader of gin's state) and
check them (:mod:`~flowrl.config.checks`)."""

from flowrl.config.files import PACKAGE_ROOT, REPO_ROOT, check_includes, find_gin, gin_home, split_agent
from flowrl.config.parsing import parse, register_all
from flowrl.config.query import bound, default, operative, task, value

__all__ = ["PACKAGE_ROOT", "REPO_ROOT", "bound", "check_includes", "default", "find_gin", "gin_home", "operative",
           "parse", "register_all", "split_agent", "task", "value"]
