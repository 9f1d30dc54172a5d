"""statefulset-migrator's client side: the typed Python API (``stsmigrate.api``) and
the ``stsmigrate`` command (``stsmigrate.cli``)."""
