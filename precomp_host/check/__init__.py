"""The hosting doctor: is a deployed precomputed dataset readable by the viewers? (issue 17)

:func:`~precomp_host.check.doctor.check` fetches a dataset (or a site's datasets) the way
Neuroglancer, tensorstore and cloud-volume do, runs the contract's client tier on the answers
and returns a :class:`~precomp_host.check.findings.Report`: each problem once, with a count, one
example URL, why the viewer shows what it shows and how to fix it on the server it detected.
The wing reads the core's rules and the build's chunk codecs; only the CLI prints.
"""

from __future__ import annotations
