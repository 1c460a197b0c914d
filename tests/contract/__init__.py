"""The HTTP contract suite, written once and run against any server (issues #4 and #5).

Use: write the tree with :func:`tests.contract.fixtures.write_contract_tree`, serve that folder,
define a ``contract_server`` fixture returning a :class:`tests.contract.suite.ContractServer`,
and subclass :class:`tests.contract.suite.ContractSuite` in a ``test_*.py`` module.
"""

from __future__ import annotations
