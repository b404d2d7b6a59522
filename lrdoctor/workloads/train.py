"""Compatibility path: ``from lrdoctor.workloads.train import train, NAN_GRACE, ...`` keeps working.

The training loop lives in :mod:`lrdoctor.workloads.training`. This name is an alias of that
module in ``sys.modules``, so every name (private ones included) imports from here as before.
``lrdoctor.workloads.train`` as an *attribute* is the ``train`` function (the package refuses to
let this submodule shadow it); ``import lrdoctor.workloads.train as m`` therefore binds the
function too - use ``import lrdoctor.workloads.training as m`` for the module.
"""

import sys

from . import training

sys.modules[__name__] = training
