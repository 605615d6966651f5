"""From raw clinical exams to BraTS-ready cases, and segmentations back onto the patient's scan.

Needs the ``prepare`` extra (SimpleITK, dcm2niix, HD-BET weights, nilearn's MNI152 template):
``pip install "gliomaseg[prepare]"`` or ``make prepare-deps``.
"""
