"""Per-group Nix environments (issue 16): the catalog of profiles, the build with nix-build,
the GC roots and records under store/envs/. The sandbox mounts what `Environments` returns.
"""

from nanoclaw.nixenv.build import Environments
from nanoclaw.nixenv.catalog import EnvError, wanted_packages
from nanoclaw.nixenv.record import BuiltEnv

__all__ = ["BuiltEnv", "EnvError", "Environments", "wanted_packages"]
