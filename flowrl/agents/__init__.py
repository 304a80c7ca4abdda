"""Agents with the runner's interface (``act``, ``update``, ``state_dict``; see :mod:`flowrl.agents.base`).

Importing the package registers every agent with gin, so a config can name any of them (``Trainer.agent = @SACAgent``).
"""

from flowrl.agents import dacer, dipo, dpmd, flowrl, idem, qsm, qvpo, sac, sac_flow, sdac, td3  # noqa: F401
