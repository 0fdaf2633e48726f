"""Thin adapters from frameworks to the autolr controller.

Installed as ``autolr.integrations``. Each submodule imports its framework lazily
and names the ``pip install "autolr[extra]"`` to run when it is missing.
"""
