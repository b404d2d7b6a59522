"""Framework callbacks that run lrdoctor's rules while a training runs.

``lrdoctor.integrations.lightning.LRDoctorCallback`` (Lightning) and
``lrdoctor.integrations.hf.LRDoctorCallback`` (HuggingFace ``Trainer``). Each module imports its
framework; nothing else in lrdoctor does, so ``import lrdoctor`` needs neither.
"""
