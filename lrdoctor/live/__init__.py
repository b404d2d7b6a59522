"""The rules while a training runs.

* :mod:`.engine`: the live engine (points in, new/updated/withdrawn findings out), confirming
  each rule's findings by its ``live:`` policy;
* :mod:`.follow`: following log files as they grow (``lrdoctor watch``), through the readers;
* :mod:`.guard`: what a training does about a finding (warn, stop, roll back and skip), shared by
  the framework callbacks (:mod:`lrdoctor.integrations`) and :class:`lrdoctor.Controller`;
* :mod:`.replay`: a finished log fed point by point, to compare with ``diagnose``.
"""
